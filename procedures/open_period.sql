-- Opens a period for posting: a FUTURE period, or one that has no row yet
-- (the row is created, with its dates). Takes the period's advisory lock, as
-- pre-flight does. Refuses any other status with what to do instead: an OPEN
-- period is open already, a CLOSED one is reopened with a reason
-- (gl.reopen_period), a PERMANENTLY_CLOSED one is final; and refuses to
-- create a period before a closed one. The PERIOD_OPENED event carries the
-- reason. FX rates are reference data the DBA loads into gl.fx_rate; rows in
-- a currency without a rate are dead-lettered FX_RATE_MISSING by the run.
CREATE OR REPLACE PROCEDURE gl.open_period(p_period text, p_reason text DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status  text;
    v_start   date;
    v_refusal record;
BEGIN
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p_period));
    -- Later periods are locked against being closed while this one is
    -- created or opened before them (rows locked in period order).
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap
     WHERE ap.period = p_period FOR UPDATE;
    PERFORM FROM gl.accounting_period AS ap WHERE ap.period > p_period
      ORDER BY ap.period FOR SHARE;

    IF v_status = 'CLOSED' THEN
        RAISE EXCEPTION 'period % is CLOSED; reopening a closed period needs a reason', p_period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('`monthend period reopen %s --reason TEXT`.', p_period);
    END IF;
    SELECT * INTO v_refusal FROM gl.period_transition_refusal(p_period, v_status, 'OPEN');
    IF v_refusal.message IS NOT NULL THEN
        RAISE EXCEPTION '%', v_refusal.message
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_refusal.hint;
    END IF;

    IF v_status IS NULL THEN
        v_start := to_date(p_period, 'YYYY-MM');
        INSERT INTO gl.accounting_period (period, start_date, end_date, status, status_reason)
        VALUES (p_period, v_start, (v_start + interval '1 month - 1 day')::date, 'OPEN',
                p_reason);
    ELSE
        UPDATE gl.accounting_period
           SET status = 'OPEN', status_reason = p_reason,
               status_detail = jsonb_build_object('opened_from', v_status)
         WHERE period = p_period;
    END IF;
END
$$;

GRANT EXECUTE ON PROCEDURE gl.open_period(text, text) TO monthend_runner;
