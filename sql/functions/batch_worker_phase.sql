-- What each connection working on a batch is doing now, for `monthend watch`:
-- a worker holding a range is in that range's stage (preflight: classifying
-- and claiming its rows; processing: writing its entries), and the
-- connections preparing the staging tables are in validation. One row a
-- backend, with how long its current statement has run. Reads
-- pg_stat_activity, which shows another role's backends only to members of
-- pg_read_all_stats.
CREATE OR REPLACE FUNCTION batch.batch_worker_phase(p_batch_id bigint)
RETURNS TABLE (worker text, pid integer, phase text, range_no integer, seconds numeric)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(rg.worker, a.application_name), a.pid,
           CASE WHEN rg.range_id IS NULL THEN 'validation'
                WHEN rg.stage = 'PREFLIGHT' THEN 'preflight'
                ELSE 'processing' END,
           rg.range_no,
           round(extract(epoch FROM clock_timestamp() - coalesce(rg.started_at, a.query_start))
                 ::numeric, 1)
    FROM pg_stat_activity AS a
    LEFT JOIN batch.range AS rg
      ON rg.worker_pid = a.pid AND rg.batch_id = p_batch_id AND rg.status = 'RUNNING'
    WHERE a.datname = current_database() AND a.application_name LIKE 'monthend %'
      AND (rg.range_id IS NOT NULL
           OR (a.application_name = 'monthend stage' AND a.state = 'active'
               AND a.query LIKE '%run_validation_piece%'
               AND EXISTS (SELECT FROM batch.run AS r
                           WHERE r.batch_id = p_batch_id AND r.status = 'ALLOCATED')))
    ORDER BY 1, 2;
END;

GRANT EXECUTE ON FUNCTION batch.batch_worker_phase(bigint) TO monthend_runner, monthend_auditor;
