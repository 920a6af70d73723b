-- Phase 0: opens a batch for a period. Refuses a period that is not OPEN, and
-- a period that already has an unfinished batch (named in the message, so the
-- operator can resume or cancel it). Returns the new batch_id.
CREATE OR REPLACE PROCEDURE batch.start_run(
    p_period       text,
    p_workers      integer,
    p_range_size   integer,
    p_max_attempts integer,
    INOUT p_batch_id bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status       text;
    v_active_batch bigint;
    v_active_state text;
BEGIN
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap WHERE ap.period = p_period;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'accounting period % does not exist', p_period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = gl.period_posting_hint(p_period, NULL);
    ELSIF v_status <> 'OPEN' THEN
        RAISE EXCEPTION 'accounting period % is %, nothing can be posted to it', p_period, v_status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = gl.period_posting_hint(p_period, v_status);
    END IF;

    BEGIN
        INSERT INTO batch.run (period, workers, range_size, max_attempts)
        VALUES (p_period, p_workers, p_range_size, p_max_attempts)
        RETURNING batch_id INTO p_batch_id;
    EXCEPTION WHEN unique_violation THEN
        SELECT r.batch_id, r.status INTO v_active_batch, v_active_state
          FROM batch.run AS r
         WHERE r.period = p_period AND r.status NOT IN ('COMMITTED', 'CANCELLED');
        RAISE EXCEPTION 'period % already has an unfinished batch % (status %)',
                        p_period, v_active_batch, v_active_state
            USING ERRCODE = 'lock_not_available',
                  HINT = format('Wait for it, or finish it with "monthend resume %s", or abandon it with "monthend cancel %s".',
                                v_active_batch, v_active_batch);
    END;

    PERFORM batch.log_event(p_batch_id, 'BATCH_STARTED',
                            format('batch %s started for period %s with %s workers',
                                   p_batch_id, p_period, p_workers),
                            jsonb_build_object('workers', p_workers, 'range_size', p_range_size));
    PERFORM audit.append('BATCH_STARTED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', p_period, 'workers', p_workers));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.start_run(text, integer, integer, integer, bigint)
    TO monthend_runner;
