-- What every pre-flight (batch.preflight, batch.preflight_reversal) does when
-- a gate fails: the batch becomes FAILED at STARTED with the gates' errors (its
-- check rows stay, nothing else was written), the timeline and the audit chain
-- record the refusal, and the caller returns.
CREATE OR REPLACE PROCEDURE batch.refuse_preflight(p_batch_id bigint, p_errors text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE batch.run
       SET status = 'FAILED', failed_status = 'STARTED', finished_at = clock_timestamp(),
           error = 'pre-flight refused the batch: ' || array_to_string(p_errors, '; ')
     WHERE batch_id = p_batch_id;
    PERFORM batch.log_event(p_batch_id, 'PREFLIGHT_FAILED', array_to_string(p_errors, '; '),
                            '{}', 'ERROR');
    PERFORM audit.append('PREFLIGHT_RESULT', jsonb_build_object(
        'batch_id', p_batch_id, 'passed', false, 'errors', to_jsonb(p_errors)));
    RAISE WARNING 'batch % failed pre-flight: %', p_batch_id, array_to_string(p_errors, '; ');
END
$$;
