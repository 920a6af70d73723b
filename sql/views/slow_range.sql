-- Ranges running for much longer than the batch's done ranges took: longer than
-- slow_range_factor x the median done-range duration, and at least
-- slow_range_min_seconds (batch.monitor_setting). None before a range is done.
CREATE OR REPLACE VIEW batch.slow_range AS
SELECT rg.batch_id,
       rg.range_id,
       rg.range_no,
       rg.source_type,
       rg.worker,
       rg.worker_pid,
       rg.attempts,
       rg.started_at,
       round(extract(epoch FROM clock_timestamp() - rg.started_at), 1) AS running_seconds,
       round(m.median_seconds::numeric, 3) AS median_done_seconds,
       round(t.slow_after_seconds, 1) AS slow_after_seconds
FROM batch.range AS rg
CROSS JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (
               ORDER BY extract(epoch FROM d.finished_at - d.started_at)::double precision)
               AS median_seconds
    FROM batch.range AS d
    WHERE d.batch_id = rg.batch_id AND d.status = 'DONE'
) AS m
CROSS JOIN LATERAL (
    SELECT greatest(batch.monitor_setting_value('slow_range_factor') * m.median_seconds::numeric,
                    batch.monitor_setting_value('slow_range_min_seconds')) AS slow_after_seconds
) AS t
WHERE rg.status = 'RUNNING'
  AND m.median_seconds IS NOT NULL
  AND extract(epoch FROM clock_timestamp() - rg.started_at) > t.slow_after_seconds;

GRANT SELECT ON batch.slow_range TO monthend_runner, monthend_auditor;
