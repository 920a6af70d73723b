-- The period lifecycle, enforced on gl.accounting_period however it is
-- written (the procedures, psql, a tool): a row is created FUTURE or OPEN;
-- its status changes only along gl.period_transition and by the rules of
-- gl.period_transition_refusal; a CLOSED period carries its seal and an OPEN
-- one none; reopening says why; a period's numbering moves only while it is
-- OPEN; a closed period changes only by a transition, a PERMANENTLY_CLOSED one
-- not at all; only a FUTURE or OPEN period is deleted. Stamps who changed the
-- status and when. The audit event is written by
-- gl.accounting_period_audit_status, after the change.
CREATE OR REPLACE FUNCTION gl.accounting_period_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from    text;
    v_to      text;
    v_refusal record;
BEGIN
    v_from := CASE WHEN TG_OP <> 'INSERT' THEN OLD.status END;
    v_to := CASE WHEN TG_OP <> 'DELETE' THEN NEW.status END;

    IF TG_OP = 'UPDATE' AND v_from = v_to THEN
        IF v_from = 'OPEN' THEN
            IF NEW.seal_digest IS NOT NULL THEN
                RAISE EXCEPTION 'period % is OPEN and cannot carry a seal', NEW.period
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = format('Close it with `monthend period close %s`.', NEW.period);
            END IF;
            RETURN NEW;
        ELSIF v_from = 'FUTURE' AND NEW.je_numbers_used = OLD.je_numbers_used
              AND NEW.seal_digest IS NULL THEN
            RETURN NEW;
        ELSIF ROW(NEW.*) IS NOT DISTINCT FROM ROW(OLD.*) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'period % is %: %', NEW.period, v_from,
                        CASE WHEN v_from = 'FUTURE' THEN 'nothing can be posted to it'
                             WHEN v_from = 'PERMANENTLY_CLOSED' THEN 'nothing may change it'
                             ELSE 'it changes only by a transition of its status' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = gl.period_posting_hint(NEW.period, v_from);
    END IF;

    SELECT * INTO v_refusal
      FROM gl.period_transition_refusal(coalesce(NEW.period, OLD.period), v_from, v_to);
    IF v_refusal.message IS NOT NULL THEN
        RAISE EXCEPTION '%', v_refusal.message
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_refusal.hint;
    END IF;

    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF v_to = 'CLOSED' AND NEW.seal_digest IS NULL THEN
        RAISE EXCEPTION 'period % cannot be CLOSED without its balances and seal', NEW.period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Close it with `monthend period close %s` (gl.close_period), '
                                'which checks it, writes its balances and seals it.',
                                NEW.period);
    ELSIF v_to IN ('OPEN', 'FUTURE') AND NEW.seal_digest IS NOT NULL THEN
        RAISE EXCEPTION 'period % cannot be % while it carries a seal', NEW.period, v_to
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Reopen it with `monthend period reopen %s --reason TEXT` '
                                '(gl.reopen_period), which discards its balances.', NEW.period);
    ELSIF v_from = 'CLOSED' AND v_to = 'OPEN' AND coalesce(btrim(NEW.status_reason), '') = '' THEN
        RAISE EXCEPTION 'reopening period % needs a reason', NEW.period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('`monthend period reopen %s --reason TEXT`.', NEW.period);
    ELSIF v_to IN ('ARCHIVED', 'RESTORED') AND NOT NEW.status_detail ? 'manifest_sha256' THEN
        RAISE EXCEPTION 'period % becomes % only with its archive', NEW.period, v_to
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('`monthend archive --period %s --to DIR` (gl.archive_period) '
                                'or `monthend restore --from DIR` (gl.restore_period).',
                                NEW.period);
    ELSIF TG_OP = 'UPDATE' AND NEW.je_numbers_used <> OLD.je_numbers_used THEN
        RAISE EXCEPTION 'period % is %: its numbering cannot move', NEW.period, v_from
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The detail belongs to one transition: a change of status that does not
    -- write its own starts from none rather than repeat the previous one's.
    IF TG_OP = 'UPDATE' AND NEW.status_detail = OLD.status_detail THEN
        NEW.status_detail := '{}';
    END IF;
    NEW.status_changed_at := clock_timestamp();
    NEW.status_changed_by := session_user;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER accounting_period_guard
    BEFORE INSERT OR UPDATE OR DELETE ON gl.accounting_period
    FOR EACH ROW EXECUTE FUNCTION gl.accounting_period_guard();
