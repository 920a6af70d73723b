-- Puts a FAILED batch back to the status it had reached, with its failed
-- ranges pending and their attempts reset, so resume can finish it. A batch
-- that is not FAILED is left as it is.
CREATE OR REPLACE PROCEDURE batch.reopen_batch(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run batch.run%ROWTYPE;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status <> 'FAILED' THEN
        RETURN;
    END IF;
    UPDATE batch.range
       SET status = 'PENDING', attempts = 0, retry_after = NULL, worker_pid = NULL
     WHERE batch_id = p_batch_id AND status = 'FAILED';
    UPDATE batch.run
       SET status = v_run.failed_status, failed_status = NULL, error = NULL, finished_at = NULL
     WHERE batch_id = p_batch_id;
    PERFORM batch.log_event(p_batch_id, 'REOPENED',
        format('batch %s reopened at %s after: %s', p_batch_id, v_run.failed_status, v_run.error));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.reopen_batch(bigint) TO monthend_runner;
