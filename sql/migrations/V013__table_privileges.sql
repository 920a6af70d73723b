-- Table privileges. The runner reads the control and reference tables and
-- writes nothing directly (its writes go through SECURITY DEFINER procedures);
-- the auditor reads everything and writes nothing. Tables and views the owner
-- creates later get the same by the default privileges below.
GRANT SELECT ON ALL TABLES IN SCHEMA batch TO monthend_runner, monthend_auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA gl TO monthend_runner, monthend_auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA audit TO monthend_auditor;
GRANT SELECT ON ALL TABLES IN SCHEMA subledger TO monthend_auditor;
GRANT SELECT ON subledger.premium_transaction, subledger.claims_transaction TO monthend_runner;
ALTER DEFAULT PRIVILEGES FOR ROLE monthend_owner IN SCHEMA gl, batch
    GRANT SELECT ON TABLES TO monthend_runner, monthend_auditor;
ALTER DEFAULT PRIVILEGES FOR ROLE monthend_owner IN SCHEMA audit, subledger
    GRANT SELECT ON TABLES TO monthend_auditor;
