-- Closes a CLOSED period permanently: PERMANENTLY_CLOSED is final, nothing
-- changes the period afterwards (not its status, balances, seal or checks).
-- Refused while an earlier period is not permanently closed: periods are
-- locked in order. Takes the period's advisory lock, as pre-flight does.
-- The PERIOD_LOCKED event carries the seal it makes final.
CREATE OR REPLACE PROCEDURE gl.lock_period(p_period text, p_reason text DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status  text;
    v_seal    bytea;
    v_refusal record;
BEGIN
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p_period));
    -- Earlier periods cannot be reopened under us (rows locked in period order).
    PERFORM FROM gl.accounting_period AS ap WHERE ap.period < p_period
      ORDER BY ap.period FOR SHARE;
    SELECT ap.status, ap.seal_digest INTO v_status, v_seal
      FROM gl.accounting_period AS ap WHERE ap.period = p_period FOR UPDATE;

    IF v_status IS NULL THEN
        RAISE EXCEPTION 'accounting period % does not exist', p_period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Open it with `monthend period open %s`.', p_period);
    END IF;
    SELECT * INTO v_refusal
      FROM gl.period_transition_refusal(p_period, v_status, 'PERMANENTLY_CLOSED');
    IF v_refusal.message IS NOT NULL THEN
        RAISE EXCEPTION '%', v_refusal.message
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_refusal.hint;
    END IF;

    UPDATE gl.accounting_period
       SET status = 'PERMANENTLY_CLOSED', status_reason = p_reason,
           status_detail = jsonb_build_object('seal_digest', encode(v_seal, 'hex'))
     WHERE period = p_period;
END
$$;

GRANT EXECUTE ON PROCEDURE gl.lock_period(text, text) TO monthend_runner;
