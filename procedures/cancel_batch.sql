-- Abandons an unfinished batch and leaves nothing behind in the ledger or the
-- claims (batch.release_batch). The batch's own history (run, ranges,
-- events, checks) stays, marked CANCELLED.
CREATE OR REPLACE PROCEDURE batch.cancel_batch(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run      batch.run%ROWTYPE;
    v_released bigint;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.mode = 'DRAFT' AND v_run.status NOT IN ('COMMITTED', 'CANCELLED') THEN
        RAISE EXCEPTION 'batch % is a draft; a draft is discarded, not cancelled', p_batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Remove it and all it holds with "monthend discard %s".', p_batch_id);
    ELSIF v_run.status IN ('COMMITTED', 'CANCELLED') THEN
        RAISE EXCEPTION 'batch % is % and cannot be cancelled', p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A committed batch is corrected with reversing entries.';
    END IF;

    CALL batch.release_batch(p_batch_id, v_released);

    UPDATE batch.range SET status = 'FAILED', worker_pid = NULL,
                           last_error = coalesce(last_error, 'batch cancelled')
     WHERE batch_id = p_batch_id AND status IN ('PENDING', 'RUNNING');
    UPDATE batch.run SET status = 'CANCELLED', finished_at = clock_timestamp()
     WHERE batch_id = p_batch_id;

    PERFORM batch.log_event(p_batch_id, 'CANCELLED',
        format('batch %s cancelled; %s claimed rows released', p_batch_id, v_released),
        '{}', 'WARNING');
    PERFORM audit.append('BATCH_CANCELLED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', v_run.period, 'released_rows', v_released));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.cancel_batch(bigint) TO monthend_runner;
