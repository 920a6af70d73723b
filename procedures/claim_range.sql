-- The queue of pre-flight and of processing. Claims the next range of a batch
-- for the calling connection and returns it (NULL when none can be claimed
-- now), with how many ranges of the batch's current stage are not yet done
-- (PREFLIGHTING: pre-flight's ranges, ALLOCATED: processing's). A range is claimable when PENDING and past its
-- retry time, or RUNNING with no live claimer (its session ended, so its
-- transaction rolled back). The claim is a session-level advisory lock on the
-- range (see batch.range_claim_held), held until process_range finishes it or
-- record_range_failure gives it back. SKIP LOCKED passes over ranges that a
-- live transaction is processing, so any number of workers, on any host, can
-- call this concurrently. Commit it on its own: the claim is then visible to
-- the dashboard while the range is processed. A RUNNING range with no live
-- claimer is an attempt whose session ended before it could record a result
-- (a crash, a lost connection): it counts, and at max_attempts the range and
-- the batch fail instead of the range being handed out again, so a range that
-- takes its server down on every attempt does not do so for ever.
CREATE OR REPLACE PROCEDURE batch.claim_range(
    p_batch_id      bigint,
    p_worker        text,
    INOUT p_range_id bigint DEFAULT NULL,
    INOUT p_attempt  integer DEFAULT NULL,
    INOUT p_remaining integer DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status       text;
    v_max_attempts integer;
    v_range_status text;
    v_attempts     integer;
    v_stage        text;
BEGIN
    SELECT r.status, r.max_attempts INTO v_status, v_max_attempts
      FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_status NOT IN ('PREFLIGHTING', 'ALLOCATED') THEN
        RAISE EXCEPTION 'batch % is %; ranges are claimed while it is PREFLIGHTING or ALLOCATED',
                        p_batch_id, v_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- A PREFLIGHTING batch hands out the ranges still to be pre-flighted, an
    -- ALLOCATED one the ranges to process.
    v_stage := CASE v_status WHEN 'PREFLIGHTING' THEN 'PREFLIGHT' ELSE 'PROCESS' END;

    SELECT rg.range_id, rg.status, rg.attempts INTO p_range_id, v_range_status, v_attempts
      FROM batch.range AS rg
     WHERE rg.batch_id = p_batch_id
       AND rg.stage = v_stage
       AND ((rg.status = 'PENDING' AND (rg.retry_after IS NULL OR rg.retry_after <= now()))
            OR (rg.status = 'RUNNING' AND NOT batch.range_claim_held(rg.range_id)))
     ORDER BY rg.range_no
     LIMIT 1
       FOR UPDATE SKIP LOCKED;

    IF p_range_id IS NOT NULL AND v_range_status = 'RUNNING'
       AND v_attempts >= v_max_attempts THEN
        CALL batch.record_range_failure(p_range_id, v_attempts,
            format('attempt %s ended with its session (a crash or a lost connection) '
                   'before it recorded a result', v_attempts));
        p_range_id := NULL;
    END IF;

    IF p_range_id IS NOT NULL THEN
        -- The row lock keeps other claimers off until this commits; by then
        -- the advisory lock does.
        PERFORM pg_advisory_lock(batch.lock_key('range_claim', p_range_id));
        UPDATE batch.range AS rg
           SET status = 'RUNNING', attempts = rg.attempts + 1, worker = p_worker,
               worker_pid = pg_backend_pid(),
               worker_backend_start = (SELECT a.backend_start FROM pg_stat_activity AS a
                                        WHERE a.pid = pg_backend_pid()),
               started_at = clock_timestamp(), finished_at = NULL, retry_after = NULL
         WHERE rg.range_id = p_range_id
        RETURNING rg.attempts INTO p_attempt;
    END IF;

    SELECT count(*)::integer INTO p_remaining
      FROM batch.range AS rg
     WHERE rg.batch_id = p_batch_id AND rg.status <> 'DONE' AND rg.stage = v_stage;
END
$$;

GRANT EXECUTE ON PROCEDURE batch.claim_range(bigint, text, bigint, integer, integer)
    TO monthend_runner;
