-- Marks a batch FAILED with the reason, remembering the status it had reached
-- so that resume continues from there. Leaves the ledger untouched. The first
-- failure is the cause; a batch already FAILED keeps its error (a worker whose
-- range was cut short by that failure must not replace it).
CREATE OR REPLACE PROCEDURE batch.fail_batch(p_batch_id bigint, p_error text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE batch.run
       SET failed_status = status,
           status = 'FAILED',
           error = p_error,
           finished_at = clock_timestamp()
     WHERE batch_id = p_batch_id AND status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED', 'FAILED');
    IF FOUND THEN
        PERFORM batch.log_event(p_batch_id, 'BATCH_FAILED', p_error, '{}', 'ERROR');
        PERFORM audit.append('VALIDATION_FAILURE',
                             jsonb_build_object('batch_id', p_batch_id, 'error', p_error));
    END IF;
END
$$;

GRANT EXECUTE ON PROCEDURE batch.fail_batch(bigint, text) TO monthend_runner;
