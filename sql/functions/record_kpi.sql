-- Records a batch's KPIs (batch.compute_kpi) in batch.kpi; post-processing
-- calls it, and a DBA can for a batch that failed or was cancelled. Calling
-- it again replaces the row. Returns the KPI document.
CREATE OR REPLACE FUNCTION batch.record_kpi(p_batch_id bigint)
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO batch.kpi AS k (batch_id, success, total_seconds, within_target_window,
                                within_hard_window, source_rows_per_second, kpi)
    SELECT p_batch_id,
           (d.kpi ->> 'success')::boolean,
           (d.kpi ->> 'total_seconds')::numeric,
           (d.kpi ->> 'within_target_window')::boolean,
           (d.kpi ->> 'within_hard_window')::boolean,
           (d.kpi ->> 'source_rows_per_second')::numeric,
           d.kpi
      FROM (SELECT batch.compute_kpi(p_batch_id) AS kpi) AS d
     WHERE d.kpi IS NOT NULL
    ON CONFLICT (batch_id) DO UPDATE
       SET recorded_at = clock_timestamp(), success = excluded.success,
           total_seconds = excluded.total_seconds,
           within_target_window = excluded.within_target_window,
           within_hard_window = excluded.within_hard_window,
           source_rows_per_second = excluded.source_rows_per_second, kpi = excluded.kpi
    RETURNING k.kpi;
END;

GRANT EXECUTE ON FUNCTION batch.record_kpi(bigint) TO monthend_runner;
