-- Live measures of a batch, one row a batch, as the dashboard, the alerts, the
-- KPIs and the Prometheus exporter read them. Filter on batch_id: every figure
-- is computed for the batches asked for only.
--
--   phase                 what the batch is doing now (preflight ... done)
--   rows_total/rows_done  claimed source rows, and those of DONE ranges
--   current_rows_per_second
--                         rows of ranges finished in the last
--                         throughput_window_seconds, over that window (or over
--                         the time since processing began, when shorter);
--                         NULL unless ranges are being processed
--   average_rows_per_second  rows done over the time since the first claim
--   peak_rows_per_second  the best window of the batch so far
--   eta_seconds           rows left at the current rate (the average when
--                         nothing finished in the window); 0 once processed
--   projected_seconds     elapsed + eta: when processing will end, from start
--   latency_p50..max      seconds a DONE range took (percentile_cont)
--   worker_rows_per_second  throughput per worker busy in the window
--   warmed_up             processing for warmup_seconds since the first claim
--                         (or since the batch was reopened): throughput alerts
--                         are judged only then
CREATE OR REPLACE VIEW batch.batch_metrics AS
SELECT r.batch_id,
       r.period,
       r.status,
       CASE r.status
           WHEN 'STARTED' THEN 'preflight'
           WHEN 'PREFLIGHTING' THEN 'preflight'
           WHEN 'PREFLIGHTED' THEN 'allocation'
           WHEN 'ALLOCATED' THEN CASE WHEN p.processing THEN 'processing' ELSE 'validation' END
           WHEN 'PROCESSED' THEN 'validation'
           WHEN 'VALIDATED' THEN 'commit'
           WHEN 'COMMITTED' THEN CASE WHEN r.phase_seconds ? 'post_processing' THEN 'done'
                                      ELSE 'post_processing' END
           ELSE lower(r.status)
       END AS phase,
       r.workers,
       r.started_at,
       r.finished_at,
       round(extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at), 1)
           AS elapsed_seconds,
       tot.rows_total,
       g.rows_done,
       CASE WHEN tot.rows_total > 0 THEN round(100.0 * g.rows_done / tot.rows_total, 1)
            WHEN r.status IN ('VALIDATED', 'DRAFT', 'COMMITTED') THEN 100.0
       END AS percent_done,
       g.je_done,
       g.first_claim_at,
       round(p.processing_seconds, 1) AS processing_seconds,
       round(c.current_rps, 1) AS current_rows_per_second,
       round(c.average_rps, 1) AS average_rows_per_second,
       round(pk.peak_rps, 1) AS peak_rows_per_second,
       s.target_rps AS target_rows_per_second,
       round(100 * coalesce(c.current_rps, c.average_rps) / nullif(s.target_rps, 0), 1)
           AS percent_of_target,
       round(g.je_done / nullif(p.processing_seconds, 0), 1) AS journal_entries_per_second,
       round(e.eta_seconds, 0) AS eta_seconds,
       round(extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at)
             + e.eta_seconds, 0) AS projected_seconds,
       g.ranges_total,
       g.ranges_pending,
       g.ranges_running,
       g.ranges_done,
       g.ranges_failed,
       f.ranges_with_failures,
       f.range_failures,
       g.ranges_retried,
       (SELECT count(*) FROM batch.slow_range AS sr WHERE sr.batch_id = r.batch_id) AS ranges_slow,
       round(g.pct[1]::numeric, 3) AS latency_p50_seconds,
       round(g.pct[2]::numeric, 3) AS latency_p95_seconds,
       round(g.pct[3]::numeric, 3) AS latency_p99_seconds,
       round(g.max_seconds, 3) AS latency_max_seconds,
       CASE WHEN p.processing THEN w.workers_in_window ELSE g.workers_used END AS active_workers,
       round(CASE WHEN p.processing THEN c.current_rps / nullif(w.workers_in_window, 0)
                  ELSE c.average_rps / nullif(g.workers_used, 0) END, 1)
           AS worker_rows_per_second,
       s.target_worker_rps AS target_worker_rows_per_second,
       r.source_rows,
       r.dead_letter_rows,
       round(100.0 * r.dead_letter_rows / nullif(r.source_rows, 0), 3) AS dead_letter_percent,
       coalesce(p.processing AND p.active_since <= clock_timestamp() - s.warmup, false)
           AS warmed_up,
       r.kind,
       r.mode
FROM batch.run AS r
CROSS JOIN LATERAL (
    SELECT batch.monitor_setting_value('target_source_rows_per_second') AS target_rps,
           batch.monitor_setting_value('target_worker_rows_per_second') AS target_worker_rps,
           batch.monitor_setting_value('throughput_window_seconds') AS window_seconds,
           batch.monitor_setting_value('warmup_seconds') * interval '1 second' AS warmup
) AS s
CROSS JOIN LATERAL (
    SELECT count(*) AS ranges_total,
           count(*) FILTER (WHERE rg.status = 'PENDING') AS ranges_pending,
           count(*) FILTER (WHERE rg.status = 'RUNNING') AS ranges_running,
           count(*) FILTER (WHERE rg.status = 'DONE') AS ranges_done,
           count(*) FILTER (WHERE rg.status = 'FAILED') AS ranges_failed,
           count(*) FILTER (WHERE rg.attempts > 1) AS ranges_retried,
           coalesce(sum(rg.row_count) FILTER (WHERE rg.status = 'DONE'), 0) AS rows_done,
           coalesce(sum(rg.row_count), 0) AS rows_ranged,
           coalesce(sum(rg.je_count) FILTER (WHERE rg.status = 'DONE'), 0) AS je_done,
           count(DISTINCT rg.worker) FILTER (WHERE rg.status = 'DONE') AS workers_used,
           min(rg.started_at) AS first_claim_at,
           max(rg.finished_at) FILTER (WHERE rg.status = 'DONE') AS last_done_at,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM rg.finished_at - rg.started_at)::double precision)
               FILTER (WHERE rg.status = 'DONE') AS pct,
           max(extract(epoch FROM rg.finished_at - rg.started_at))
               FILTER (WHERE rg.status = 'DONE') AS max_seconds
    FROM batch.range AS rg
    WHERE rg.batch_id = r.batch_id
) AS g
CROSS JOIN LATERAL (
    SELECT coalesce(r.claimed_rows, g.rows_ranged) AS rows_total
) AS tot
CROSS JOIN LATERAL (
    SELECT count(DISTINCT vr.range_id) AS ranges_with_failures,
           count(*) AS range_failures
    FROM batch.validation_result AS vr
    WHERE vr.batch_id = r.batch_id AND vr.check_name = 'range_attempt' AND vr.status = 'FAIL'
) AS f
CROSS JOIN LATERAL (
    SELECT r.status = 'ALLOCATED' AND g.ranges_done < g.ranges_total AS processing,
           -- A reopened batch starts its warm-up again.
           greatest(g.first_claim_at,
                    (SELECT max(ev.at) FROM batch.event AS ev
                      WHERE ev.batch_id = r.batch_id AND ev.kind = 'REOPENED')) AS active_since,
           extract(epoch FROM
               CASE WHEN r.status = 'ALLOCATED' AND g.ranges_done < g.ranges_total
                    THEN clock_timestamp() ELSE g.last_done_at END - g.first_claim_at)
               AS processing_seconds
) AS p
CROSS JOIN LATERAL (
    SELECT coalesce(sum(rg.row_count) FILTER (WHERE rg.status = 'DONE'), 0) AS window_rows,
           count(DISTINCT rg.worker) AS workers_in_window
    FROM batch.range AS rg
    WHERE rg.batch_id = r.batch_id
      AND p.processing
      AND (rg.status = 'RUNNING'
           OR (rg.status = 'DONE'
               AND rg.finished_at > clock_timestamp() - s.window_seconds * interval '1 second'))
) AS w
CROSS JOIN LATERAL (
    SELECT CASE WHEN p.processing AND p.active_since IS NOT NULL
                THEN w.window_rows / greatest(least(s.window_seconds,
                         extract(epoch FROM clock_timestamp() - p.active_since)), 1)
           END AS current_rps,
           CASE WHEN g.first_claim_at IS NOT NULL
                THEN g.rows_done / greatest(p.processing_seconds, 1) END AS average_rps
) AS c
CROSS JOIN LATERAL (
    SELECT max(x.window_rows / greatest(least(s.window_seconds,
                   extract(epoch FROM x.finished_at - g.first_claim_at)), 1)) AS peak_rps
    FROM (SELECT rg.finished_at,
                 sum(rg.row_count) OVER (
                     ORDER BY rg.finished_at
                     RANGE BETWEEN batch.monitor_setting_value('throughput_window_seconds')
                                   * interval '1 second' PRECEDING AND CURRENT ROW) AS window_rows
          FROM batch.range AS rg
          WHERE rg.batch_id = r.batch_id AND rg.status = 'DONE') AS x
) AS pk
CROSS JOIN LATERAL (
    SELECT CASE WHEN NOT p.processing AND r.status IN ('ALLOCATED', 'PROCESSED', 'VALIDATED',
                                                      'DRAFT', 'COMMITTED') THEN 0
                WHEN p.processing AND coalesce(c.current_rps, 0) > 0
                    THEN (tot.rows_total - g.rows_done) / c.current_rps
                WHEN p.processing AND c.average_rps > 0
                    THEN (tot.rows_total - g.rows_done) / c.average_rps
           END AS eta_seconds
) AS e;

GRANT SELECT ON batch.batch_metrics TO monthend_runner, monthend_auditor;
