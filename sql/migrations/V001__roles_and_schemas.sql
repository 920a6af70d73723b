-- The three roles of the contract and the four schemas they work in.
-- Roles are cluster-wide, so they are created only when missing: several
-- databases of one cluster can carry monthend side by side.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monthend_owner') THEN
        CREATE ROLE monthend_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monthend_runner') THEN
        CREATE ROLE monthend_runner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'monthend_auditor') THEN
        CREATE ROLE monthend_auditor NOLOGIN;
    END IF;
END
$$;

-- The migration tool switches to the owner role; whoever migrates must be a member.
GRANT monthend_owner TO CURRENT_USER;

CREATE SCHEMA IF NOT EXISTS subledger AUTHORIZATION monthend_owner;
CREATE SCHEMA IF NOT EXISTS gl AUTHORIZATION monthend_owner;
ALTER SCHEMA batch OWNER TO monthend_owner;
CREATE SCHEMA IF NOT EXISTS audit AUTHORIZATION monthend_owner;
ALTER TABLE batch.schema_migration OWNER TO monthend_owner;

-- Nothing is executable by PUBLIC unless a file grants it on purpose.
ALTER DEFAULT PRIVILEGES FOR ROLE monthend_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE monthend_owner REVOKE EXECUTE ON ROUTINES FROM PUBLIC;

GRANT USAGE ON SCHEMA subledger, gl, batch, audit TO monthend_runner, monthend_auditor;
