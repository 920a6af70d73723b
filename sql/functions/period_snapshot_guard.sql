-- A closed period's balances (gl.period_balance), the batches its seal covers
-- (gl.period_seal_batch) and its closing checks (gl.period_check) are what
-- the seal and the audit chain vouch for: their rows are never updated, and
-- are written or removed only while the period is OPEN (gl.close_period
-- writes them before the period becomes CLOSED, gl.reopen_period removes
-- balances and seal batches once it is OPEN again). Closing checks stay for
-- good: they are the record of each close.
CREATE OR REPLACE FUNCTION gl.period_snapshot_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_period text;
    v_status text;
BEGIN
    IF TG_OP IN ('UPDATE', 'TRUNCATE')
       OR (TG_OP = 'DELETE' AND TG_TABLE_NAME = 'period_check') THEN
        RAISE EXCEPTION '% on %.% refused: a period''s sealed balances and closing checks '
                        'are never changed', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Reopen the period (`monthend period reopen P --reason TEXT`) and '
                         'close it again.';
    END IF;
    v_period := CASE WHEN TG_OP = 'DELETE' THEN OLD.period ELSE NEW.period END;
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap WHERE ap.period = v_period;
    IF v_status IS DISTINCT FROM 'OPEN' THEN
        RAISE EXCEPTION '% on %.% refused: period % is %', TG_OP, TG_TABLE_SCHEMA,
                        TG_TABLE_NAME, v_period, coalesce(v_status, 'absent')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A period''s balances are written by `monthend period close` and '
                         'discarded by `monthend period reopen`.';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

CREATE OR REPLACE TRIGGER period_balance_guard
    BEFORE INSERT OR UPDATE OR DELETE ON gl.period_balance
    FOR EACH ROW EXECUTE FUNCTION gl.period_snapshot_guard();
CREATE OR REPLACE TRIGGER period_balance_refuse_truncate
    BEFORE TRUNCATE ON gl.period_balance
    FOR EACH STATEMENT EXECUTE FUNCTION gl.period_snapshot_guard();
CREATE OR REPLACE TRIGGER period_seal_batch_guard
    BEFORE INSERT OR UPDATE OR DELETE ON gl.period_seal_batch
    FOR EACH ROW EXECUTE FUNCTION gl.period_snapshot_guard();
CREATE OR REPLACE TRIGGER period_seal_batch_refuse_truncate
    BEFORE TRUNCATE ON gl.period_seal_batch
    FOR EACH STATEMENT EXECUTE FUNCTION gl.period_snapshot_guard();
CREATE OR REPLACE TRIGGER period_check_guard
    BEFORE INSERT OR UPDATE OR DELETE ON gl.period_check
    FOR EACH ROW EXECUTE FUNCTION gl.period_snapshot_guard();
CREATE OR REPLACE TRIGGER period_check_refuse_truncate
    BEFORE TRUNCATE ON gl.period_check
    FOR EACH STATEMENT EXECUTE FUNCTION gl.period_snapshot_guard();
