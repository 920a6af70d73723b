-- Records a failed attempt at a range (the error as the database gave it).
-- Below max_attempts the range goes back to PENDING with an exponential
-- backoff (1 s, 2 s, 4 s... capped at 60 s); at the last attempt the range is
-- FAILED and so is the batch, naming the range and the error. p_attempt is the
-- attempt number claim_range returned: a failure reported late, after another
-- worker re-claimed the range, changes nothing. An attempt cut short because
-- the batch left PREFLIGHTING or ALLOCATED (another range failed it, or it
-- was cancelled) is not the range's failure: the range goes back to PENDING,
-- the attempt unspent.
CREATE OR REPLACE PROCEDURE batch.record_range_failure(
    p_range_id bigint,
    p_attempt  integer,
    p_error    text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_range  batch.range%ROWTYPE;
    v_max    integer;
    v_status text;
BEGIN
    SELECT rg.* INTO v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id FOR UPDATE;
    IF NOT FOUND OR v_range.status <> 'RUNNING' OR v_range.attempts <> p_attempt THEN
        RETURN;
    END IF;
    -- Give the claim back if this session holds it (a reconnected worker
    -- reporting for its dead session holds nothing: that lock went with it).
    IF batch.range_claim_held(p_range_id, pg_backend_pid()) THEN
        PERFORM pg_advisory_unlock(batch.lock_key('range_claim', p_range_id));
    END IF;
    SELECT r.max_attempts, r.status INTO v_max, v_status
      FROM batch.run AS r WHERE r.batch_id = v_range.batch_id;
    IF v_status NOT IN ('PREFLIGHTING', 'ALLOCATED') THEN
        UPDATE batch.range
           SET status = 'PENDING', attempts = attempts - 1, worker_pid = NULL
         WHERE range_id = p_range_id;
        RETURN;
    END IF;

    PERFORM batch.record_check(v_range.batch_id, p_range_id, 'range', 'range_attempt', false,
                               'attempt ' || p_attempt || ' succeeds', p_error);
    IF p_attempt >= v_max THEN
        UPDATE batch.range
           SET status = 'FAILED', last_error = p_error, finished_at = clock_timestamp(),
               worker_pid = NULL
         WHERE range_id = p_range_id;
        CALL batch.fail_batch(v_range.batch_id,
            format('range %s (%s %s..%s) failed after %s attempts: %s', v_range.range_no,
                   v_range.source_type, v_range.lo_source_id, v_range.hi_source_id,
                   p_attempt, p_error));
    ELSE
        UPDATE batch.range
           SET status = 'PENDING', last_error = p_error, worker_pid = NULL,
               retry_after = clock_timestamp()
                             + least(60, power(2, p_attempt - 1)) * interval '1 second'
         WHERE range_id = p_range_id;
        PERFORM batch.log_event(v_range.batch_id, 'RANGE_RETRY',
            format('range %s attempt %s failed, retrying: %s', v_range.range_no, p_attempt,
                   p_error),
            jsonb_build_object('range_no', v_range.range_no, 'attempt', p_attempt), 'WARNING');
    END IF;
END
$$;

GRANT EXECUTE ON PROCEDURE batch.record_range_failure(bigint, integer, text) TO monthend_runner;
