-- Everything `monthend watch` shows about a batch, as one JSON document, so
-- any client (psql included) can read the same numbers:
--   metrics      the batch's row of batch.batch_metrics
--   error, phase_seconds, target_window_minutes, hard_window_minutes
--   slow_ranges  batch.slow_range, slowest first
--   workers      batch.batch_worker_phase: each working connection's phase
--   validation   per phase: checks passed and failed
--   alerts       batch.alert_evaluation rows that hold now, critical first
--   events       the latest 12 events of the timeline, newest first
--                (RANGE_DONE events are summed up in the range counts instead)
--   database     connections used / max, cache hit ratio, and the statement
--                with the most execution time (pg_stat_statements) or a note
-- NULL when the batch does not exist.
CREATE OR REPLACE FUNCTION batch.dashboard(p_batch_id bigint)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT jsonb_build_object(
        'generated_at', clock_timestamp(),
        'metrics', to_jsonb(m),
        'error', r.error,
        'phase_seconds', r.phase_seconds,
        'target_window_minutes', batch.monitor_setting_value('target_window_minutes'),
        'hard_window_minutes', batch.monitor_setting_value('hard_window_minutes'),
        'slow_ranges', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'range_no', sr.range_no, 'worker', sr.worker, 'attempts', sr.attempts,
                       'running_seconds', sr.running_seconds,
                       'median_done_seconds', sr.median_done_seconds)
                   ORDER BY sr.running_seconds DESC)
            FROM batch.slow_range AS sr WHERE sr.batch_id = r.batch_id), '[]'::jsonb),
        'workers', coalesce((
            SELECT jsonb_agg(to_jsonb(w)) FROM batch.batch_worker_phase(r.batch_id) AS w),
            '[]'::jsonb),
        'validation', coalesce((
            SELECT jsonb_object_agg(v.phase, jsonb_build_object('pass', v.pass, 'fail', v.fail))
            FROM (SELECT vr.phase,
                         count(*) FILTER (WHERE vr.status = 'PASS') AS pass,
                         count(*) FILTER (WHERE vr.status = 'FAIL') AS fail
                  FROM batch.validation_result AS vr
                  WHERE vr.batch_id = r.batch_id
                  GROUP BY vr.phase) AS v), '{}'::jsonb),
        'alerts', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'alert', ae.alert, 'severity', ae.severity, 'value', ae.value,
                       'unit', ae.unit, 'warning', ae.warning, 'critical', ae.critical,
                       'description', ae.description, 'action', ae.action)
                   ORDER BY ae.severity = 'CRITICAL' DESC, ae.alert)
            FROM batch.alert_evaluation AS ae
            WHERE ae.batch_id = r.batch_id AND ae.severity IS NOT NULL), '[]'::jsonb),
        'events', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'at', ev.at, 'level', ev.level, 'kind', ev.kind, 'message', ev.message)
                   ORDER BY ev.event_id DESC)
            FROM (SELECT e.event_id, e.at, e.level, e.kind, e.message
                  FROM batch.event AS e
                  WHERE e.batch_id = r.batch_id AND e.kind <> 'RANGE_DONE'
                  ORDER BY e.event_id DESC
                  LIMIT 12) AS ev), '[]'::jsonb),
        'database', jsonb_build_object(
            'connections', (SELECT count(*) FROM pg_stat_activity AS a
                            WHERE a.backend_type = 'client backend'),
            'monthend_connections', (SELECT count(*) FROM pg_stat_activity AS a
                                     WHERE a.backend_type = 'client backend'
                                       AND a.application_name LIKE 'monthend%'),
            'max_connections', current_setting('max_connections')::integer,
            'cache_hit_ratio', (SELECT round(d.blks_hit::numeric
                                             / nullif(d.blks_hit + d.blks_read, 0), 4)
                                FROM pg_stat_database AS d
                                WHERE d.datname = current_database()),
            'top_statement', (SELECT to_jsonb(s) FROM batch.statement_stats(1) AS s LIMIT 1)))
    FROM batch.run AS r
    JOIN batch.batch_metrics AS m ON m.batch_id = r.batch_id
    WHERE r.batch_id = p_batch_id;
END;

GRANT EXECUTE ON FUNCTION batch.dashboard(bigint) TO monthend_runner, monthend_auditor;
