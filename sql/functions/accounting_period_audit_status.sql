-- Closing a period, or reopening one, is an audited event: however the status
-- of gl.accounting_period is changed, and by whom, the change enters the hash
-- chain in the same transaction (PERIOD_CLOSED / PERIOD_REOPENED), with the
-- period's numbering at that moment. No caller can skip it: a period's status
-- changes only by UPDATE, and the trigger fires on every one that changes it.
CREATE OR REPLACE FUNCTION gl.accounting_period_audit_status()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM audit.append(CASE NEW.status WHEN 'CLOSED' THEN 'PERIOD_CLOSED'
                                         ELSE 'PERIOD_REOPENED' END,
                         jsonb_build_object('period', NEW.period, 'status', NEW.status,
                                            'status_was', OLD.status,
                                            'je_numbers_used', NEW.je_numbers_used));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS accounting_period_audit_status ON gl.accounting_period;
CREATE TRIGGER accounting_period_audit_status
    AFTER UPDATE OF status ON gl.accounting_period
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION gl.accounting_period_audit_status();
