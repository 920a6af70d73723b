-- The end of a period-end's pre-flight range (batch.compute_upr_range,
-- batch.sum_ledger_range), in the range's own transaction, after its output:
-- the range is DONE (it stays in stage PREFLIGHT; allocation reads and then
-- removes these ranges) with the rows it wrote and when it ran, and its
-- RANGE_DONE event names what it did.
CREATE OR REPLACE PROCEDURE batch.complete_period_end_range(
    p_range_id bigint,
    p_rows     bigint,
    p_started  timestamptz,
    p_message  text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_range batch.range%ROWTYPE;
BEGIN
    UPDATE batch.range AS rg
       SET status = 'DONE', row_count = p_rows, finished_at = clock_timestamp(),
           preflight_started_at = coalesce(rg.started_at, p_started),
           preflight_finished_at = clock_timestamp(), last_error = NULL
     WHERE rg.range_id = p_range_id
    RETURNING rg.* INTO STRICT v_range;
    PERFORM batch.log_event(v_range.batch_id, 'RANGE_DONE', p_message,
        jsonb_build_object('range_no', v_range.range_no, 'rows', p_rows,
                           'stage', v_range.source_type));
END
$$;
