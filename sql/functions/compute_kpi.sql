-- The KPIs of a batch as one JSON document, computed now from the control
-- tables (batch.record_kpi stores it at post-processing; batch.kpi_report
-- gives the stored one or this). Times are measured against the window of
-- batch.monitor_setting: total is batch start to commit (or to failure, or
-- to now while running).
--
--   total_seconds, within_target_window, within_hard_window
--   phases.<phase>.seconds and .percent_of_target_window
--   source_rows_per_second      all source rows (posted + dead-lettered) over total
--   processing_rows_per_second  posted rows over the processing phase
--   worker_rows_per_second      processing rate per worker that did ranges,
--                               against target_worker_rows_per_second
--   per_worker                  each worker's rows over its own busy seconds
--   ranges_failed, range_failures, ranges_retried
--   dead_letter_rate_percent, validation_failures (checks other than range
--   attempts), alerts_raised (ALERT events by severity), success
CREATE OR REPLACE FUNCTION batch.compute_kpi(p_batch_id bigint)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT jsonb_build_object(
        'batch_id', r.batch_id,
        'period', r.period,
        'status', r.status,
        'success', r.status = 'COMMITTED',
        'total_seconds', t.total_seconds,
        'target_window_seconds', t.target_window_seconds,
        'hard_window_seconds', t.hard_window_seconds,
        'within_target_window', t.total_seconds <= t.target_window_seconds,
        'within_hard_window', t.total_seconds <= t.hard_window_seconds,
        'percent_of_target_window',
            round(100 * t.total_seconds / nullif(t.target_window_seconds, 0), 1),
        'phases', coalesce((
            SELECT jsonb_object_agg(ph.key, jsonb_build_object(
                       'seconds', ph.value::numeric,
                       'percent_of_target_window',
                       round(100 * ph.value::numeric / nullif(t.target_window_seconds, 0), 1)))
            FROM jsonb_each_text(r.phase_seconds) AS ph), '{}'::jsonb),
        'source_rows', r.source_rows,
        'posted_rows', r.claimed_rows,
        'dead_letter_rows', r.dead_letter_rows,
        'journal_entries', r.je_count,
        'journal_lines', r.line_count,
        'source_rows_per_second', round(r.source_rows / nullif(t.total_seconds, 0), 1),
        'target_source_rows_per_second', m.target_rows_per_second,
        'percent_of_target_throughput',
            round(100 * r.source_rows / nullif(t.total_seconds, 0)
                  / nullif(m.target_rows_per_second, 0), 1),
        'processing_seconds', m.processing_seconds,
        'processing_rows_per_second', m.average_rows_per_second,
        'peak_rows_per_second', m.peak_rows_per_second,
        'journal_entries_per_second', round(r.je_count / nullif(t.total_seconds, 0), 1),
        'workers', r.workers,
        'workers_used', m.active_workers,
        'worker_rows_per_second', m.worker_rows_per_second,
        'target_worker_rows_per_second', m.target_worker_rows_per_second,
        'worker_efficiency_percent',
            round(100 * m.worker_rows_per_second / nullif(m.target_worker_rows_per_second, 0), 1),
        'per_worker', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'worker', pw.worker, 'ranges', pw.ranges, 'rows', pw.rows,
                       'busy_seconds', round(pw.busy_seconds, 3),
                       'rows_per_second', round(pw.rows / nullif(pw.busy_seconds, 0), 1))
                   ORDER BY pw.worker)
            FROM (SELECT rg.worker, count(*) AS ranges, sum(rg.row_count) AS rows,
                         sum(extract(epoch FROM rg.finished_at - rg.started_at)) AS busy_seconds
                  FROM batch.range AS rg
                  WHERE rg.batch_id = r.batch_id AND rg.status = 'DONE'
                  GROUP BY rg.worker) AS pw), '[]'::jsonb),
        'ranges', m.ranges_total,
        'ranges_failed', m.ranges_with_failures,
        'range_failures', m.range_failures,
        'ranges_retried', m.ranges_retried,
        'latency_p50_seconds', m.latency_p50_seconds,
        'latency_p95_seconds', m.latency_p95_seconds,
        'latency_p99_seconds', m.latency_p99_seconds,
        'latency_max_seconds', m.latency_max_seconds,
        'dead_letter_rate_percent', m.dead_letter_percent,
        'validation_failures', (
            SELECT count(*) FROM batch.validation_result AS vr
            WHERE vr.batch_id = r.batch_id AND vr.status = 'FAIL'
              AND vr.check_name <> 'range_attempt'),
        'alerts_raised', (
            SELECT jsonb_build_object(
                       'warning', count(*) FILTER (WHERE ev.level = 'WARNING'),
                       'critical', count(*) FILTER (WHERE ev.level = 'CRITICAL'))
            FROM batch.event AS ev
            WHERE ev.batch_id = r.batch_id AND ev.kind = 'ALERT'))
    FROM batch.run AS r
    JOIN batch.batch_metrics AS m ON m.batch_id = r.batch_id
    CROSS JOIN LATERAL (
        SELECT round(extract(epoch FROM coalesce(r.finished_at, clock_timestamp())
                                        - r.started_at), 3) AS total_seconds,
               60 * batch.monitor_setting_value('target_window_minutes') AS target_window_seconds,
               60 * batch.monitor_setting_value('hard_window_minutes') AS hard_window_seconds
    ) AS t
    WHERE r.batch_id = p_batch_id;
END;

GRANT EXECUTE ON FUNCTION batch.compute_kpi(bigint) TO monthend_runner, monthend_auditor;
