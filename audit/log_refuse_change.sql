-- audit.log is append-only for every role, the owner included. (A superuser
-- can still disable triggers; the chain and the head kept outside catch that.)
CREATE OR REPLACE FUNCTION audit.log_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% on audit.% refused: the audit log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE TRIGGER log_refuse_change
    BEFORE UPDATE OR DELETE ON audit.log
    FOR EACH ROW EXECUTE FUNCTION audit.log_refuse_change();
CREATE OR REPLACE TRIGGER log_refuse_truncate
    BEFORE TRUNCATE ON audit.log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.log_refuse_change();
CREATE OR REPLACE TRIGGER chain_head_refuse_delete
    BEFORE DELETE ON audit.chain_head
    FOR EACH ROW EXECUTE FUNCTION audit.log_refuse_change();
CREATE OR REPLACE TRIGGER chain_head_refuse_truncate
    BEFORE TRUNCATE ON audit.chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit.log_refuse_change();
