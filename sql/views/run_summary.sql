-- One row a batch, as operators and schedulers read it: the control row plus
-- range progress, elapsed time and throughput.
CREATE OR REPLACE VIEW batch.run_summary AS
SELECT r.batch_id,
       r.period,
       r.status,
       r.workers,
       r.started_at,
       r.finished_at,
       round(extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at)::numeric,
             3) AS elapsed_seconds,
       r.source_rows,
       r.claimed_rows,
       r.dead_letter_rows,
       r.je_count,
       r.line_count,
       r.range_count,
       g.ranges_done,
       g.ranges_running,
       g.ranges_failed,
       g.retries,
       g.rows_done,
       r.je_number_base + 1 AS first_je_number,
       r.je_number_base + r.je_count AS last_je_number,
       encode(r.digest, 'hex') AS digest,
       r.phase_seconds,
       r.error,
       r.kind,
       r.reverses_batch_id,
       r.reversal_reason,
       r.reversal_method,
       r.mode,
       -- Ranges left in the batch's stage: to pre-flight (PREFLIGHTING) or
       -- to process (ALLOCATED).
       CASE r.status WHEN 'PREFLIGHTING' THEN g.ranges_to_preflight
                     WHEN 'ALLOCATED' THEN g.ranges_to_process ELSE 0 END AS stage_ranges_left,
       g.ranges_to_preflight
FROM batch.run AS r
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE rg.status = 'DONE')    AS ranges_done,
           count(*) FILTER (WHERE rg.status = 'RUNNING') AS ranges_running,
           count(*) FILTER (WHERE rg.status = 'FAILED')  AS ranges_failed,
           coalesce(sum(rg.attempts - 1) FILTER (WHERE rg.attempts > 1), 0) AS retries,
           coalesce(sum(rg.row_count) FILTER (WHERE rg.status = 'DONE'), 0) AS rows_done,
           count(*) FILTER (WHERE rg.stage = 'PREFLIGHT' AND rg.status <> 'DONE')
               AS ranges_to_preflight,
           count(*) FILTER (WHERE rg.stage = 'PROCESS' AND rg.status <> 'DONE')
               AS ranges_to_process
    FROM batch.range AS rg WHERE rg.batch_id = r.batch_id
) AS g ON true;

GRANT SELECT ON batch.run_summary TO monthend_runner, monthend_auditor;
