-- Reopens the latest CLOSED period, for a reason (required): every later
-- period must be open again first, since its opening balances came from this
-- one. Takes the period's advisory lock, as pre-flight does. The period's
-- balances and seal batches are discarded; its closing checks stay, and its
-- old seal stays in the audit chain (PERIOD_CLOSED), which the PERIOD_REOPENED
-- event names as discarded. Posting into it works again; closing it again
-- checks and seals it afresh.
CREATE OR REPLACE PROCEDURE gl.reopen_period(p_period text, p_reason text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status  text;
    v_seal    bytea;
    v_refusal record;
    v_rows    bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p_period));
    SELECT ap.status, ap.seal_digest INTO v_status, v_seal
      FROM gl.accounting_period AS ap WHERE ap.period = p_period FOR UPDATE;
    -- Later periods cannot be closed under us (rows locked in period order).
    PERFORM FROM gl.accounting_period AS ap WHERE ap.period > p_period
      ORDER BY ap.period FOR SHARE;

    SELECT * INTO v_refusal FROM gl.period_transition_refusal(p_period, v_status, 'OPEN');
    IF v_status IS NULL THEN
        v_refusal.message := format('accounting period %s does not exist', p_period);
        v_refusal.hint := format('Open it with `monthend period open %s`.', p_period);
    ELSIF v_status = 'FUTURE' THEN
        -- FUTURE -> OPEN is an opening, not a reopening.
        v_refusal.message := format('period %s is FUTURE; only a CLOSED period is reopened',
                                    p_period);
        v_refusal.hint := format('Open it with `monthend period open %s`.', p_period);
    END IF;
    IF v_refusal.message IS NOT NULL THEN
        RAISE EXCEPTION '%', v_refusal.message
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_refusal.hint;
    END IF;
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'reopening period % needs a reason', p_period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Say why: `monthend period reopen %s --reason TEXT`.', p_period);
    END IF;

    SELECT count(*) INTO v_rows FROM gl.period_balance AS b WHERE b.period = p_period;
    UPDATE gl.accounting_period
       SET status = 'OPEN', seal_digest = NULL, closed_at = NULL, status_reason = p_reason,
           status_detail = jsonb_build_object('discarded_seal_digest', encode(v_seal, 'hex'),
                                              'discarded_balance_rows', v_rows)
     WHERE period = p_period;
    DELETE FROM gl.period_balance AS b WHERE b.period = p_period;
    DELETE FROM gl.period_seal_batch AS s WHERE s.period = p_period;
END
$$;

GRANT EXECUTE ON PROCEDURE gl.reopen_period(text, text) TO monthend_runner;
