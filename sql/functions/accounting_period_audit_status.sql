-- Every transition of a period enters the hash chain in the same transaction:
-- its creation, each change of status and its deletion, as the event
-- gl.period_transition names (PERIOD_CREATED, PERIOD_OPENED, PERIOD_CLOSED,
-- PERIOD_REOPENED, PERIOD_LOCKED, PERIOD_DELETED), with the status it had, the
-- reason given, the numbering at that moment and what the transition recorded
-- in status_detail (a close: its seal, batches, balance rows and carried dead
-- letters). The chain row's actor is the session user, at the time. No caller
-- can skip it: the triggers fire on every change, whoever makes it.
CREATE OR REPLACE FUNCTION gl.accounting_period_audit_status()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from  text := CASE WHEN TG_OP <> 'INSERT' THEN OLD.status END;
    v_to    text := CASE WHEN TG_OP <> 'DELETE' THEN NEW.status END;
    v_event text;
BEGIN
    SELECT t.event INTO v_event
      FROM gl.period_transition AS t
     WHERE t.from_status IS NOT DISTINCT FROM v_from AND t.to_status IS NOT DISTINCT FROM v_to;
    IF TG_OP = 'DELETE' THEN
        PERFORM audit.append(coalesce(v_event, 'PERIOD_DELETED'), jsonb_build_object(
            'period', OLD.period, 'status', NULL, 'status_was', OLD.status,
            'je_numbers_used', OLD.je_numbers_used));
        RETURN NULL;
    END IF;
    PERFORM audit.append(coalesce(v_event, 'PERIOD_STATUS_CHANGED'),
                         NEW.status_detail || jsonb_build_object(
                             'period', NEW.period, 'status', NEW.status, 'status_was', v_from,
                             'reason', NEW.status_reason,
                             'je_numbers_used', NEW.je_numbers_used));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS accounting_period_audit_status ON gl.accounting_period;
CREATE TRIGGER accounting_period_audit_status
    AFTER UPDATE OF status ON gl.accounting_period
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION gl.accounting_period_audit_status();
CREATE OR REPLACE TRIGGER accounting_period_audit_insert
    AFTER INSERT ON gl.accounting_period
    FOR EACH ROW EXECUTE FUNCTION gl.accounting_period_audit_status();
CREATE OR REPLACE TRIGGER accounting_period_audit_delete
    AFTER DELETE ON gl.accounting_period
    FOR EACH ROW EXECUTE FUNCTION gl.accounting_period_audit_status();
