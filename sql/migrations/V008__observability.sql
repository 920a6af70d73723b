-- Observability: the settings the dashboard and alerts measure against, the
-- alert thresholds (DBAs tune them with UPDATE, no release needed), and the
-- KPIs recorded per batch at post-processing.

-- Targets and measuring rules, one number a row. Read by batch.batch_metrics,
-- batch.alert_evaluation and batch.compute_kpi.
CREATE TABLE batch.monitor_setting (
    name        text    NOT NULL,
    value       numeric NOT NULL,
    unit        text    NOT NULL,
    description text    NOT NULL,
    CONSTRAINT monitor_setting_pkey PRIMARY KEY (name)
);

INSERT INTO batch.monitor_setting (name, value, unit, description) VALUES
    ('target_source_rows_per_second', 5556, 'rows/s',
     'throughput the run must sustain: 10M source transactions in 30 minutes of processing'),
    ('target_worker_rows_per_second', 720, 'rows/s',
     'what one range worker is expected to process'),
    ('target_window_minutes', 20, 'min', 'target duration of a whole batch, start to commit'),
    ('hard_window_minutes', 120, 'min', 'the batch window: a batch must be committed within it'),
    ('throughput_window_seconds', 30, 's',
     'current throughput is the rows of ranges finished within this many seconds'),
    ('warmup_seconds', 60, 's',
     'throughput, ETA and worker-efficiency alerts wait this long after the first range is claimed'),
    ('slow_range_factor', 3, 'x',
     'a running range is slow when it has run this many times the median done-range duration'),
    ('slow_range_min_seconds', 5, 's', 'and at least this long');

-- One row an alert. A metric breaches a level when it is below (direction
-- 'below') or above ('above') that level; critical wins over warning; a NULL
-- level is not evaluated. batch.evaluate_alerts records each change of state
-- as a batch.event (kind ALERT or ALERT_CLEARED) with the action to take.
CREATE TABLE batch.alert_threshold (
    alert        text    NOT NULL,
    metric       text    NOT NULL,
    direction    text    NOT NULL,
    warning      numeric,
    critical     numeric,
    unit         text    NOT NULL,
    after_warmup boolean NOT NULL DEFAULT false,
    enabled      boolean NOT NULL DEFAULT true,
    action       text    NOT NULL,
    description  text    NOT NULL,
    CONSTRAINT alert_threshold_pkey PRIMARY KEY (alert),
    CONSTRAINT alert_threshold_direction_check CHECK (direction IN ('above', 'below')),
    CONSTRAINT alert_threshold_metric_check CHECK (metric IN (
        'current_rows_per_second', 'projected_minutes', 'worker_rows_per_second',
        'ranges_failed', 'dead_letter_percent')),
    CONSTRAINT alert_threshold_level_check CHECK (warning IS NOT NULL OR critical IS NOT NULL)
);

INSERT INTO batch.alert_threshold
    (alert, metric, direction, warning, critical, unit, after_warmup, action, description) VALUES
    ('THROUGHPUT_LOW', 'current_rows_per_second', 'below', 4000, 2000, 'rows/s', true,
     'Check `monthend health` for lock waits and connection use, and the slow ranges on the '
     'dashboard; add workers with `monthend work BATCH` from another host if the database has '
     'CPU to spare.',
     'source rows per second over the last throughput window'),
    ('ETA_LATE', 'projected_minutes', 'above', 25, 90, 'min', true,
     'The batch will overrun its target window: add workers (`monthend work BATCH`), tell the '
     'downstream consumers of the ledger, and above 90 minutes prepare to cancel and run '
     'after the window.',
     'projected minutes from batch start to the end of processing (elapsed + ETA)'),
    ('WORKER_EFFICIENCY_LOW', 'worker_rows_per_second', 'below', 500, NULL, 'rows/s', true,
     'Workers are waiting rather than working: look for lock waits and I/O in `monthend health`, '
     'and lower --workers if the database has fewer cores than workers.',
     'current throughput divided by the workers busy in the window'),
    ('RANGES_FAILED', 'ranges_failed', 'above', 5, 20, 'ranges', false,
     'Read the errors: `monthend status BATCH` and batch.range.last_error. Fix the cause, then '
     '`monthend resume BATCH` if the batch fails.',
     'ranges with at least one failed attempt'),
    ('DEAD_LETTER_RATE', 'dead_letter_percent', 'above', 0.1, NULL, '%', false,
     'Upstream data is worse than usual: `monthend dlq list --batch BATCH` by reason, and tell '
     'the source system''s owners before the period closes.',
     'dead-lettered source rows as a percentage of the source rows');

-- KPIs of a batch, written by post-processing (batch.record_kpi). The typed
-- columns are for SQL filters and charts; kpi holds the full document.
CREATE TABLE batch.kpi (
    batch_id               bigint      NOT NULL,
    recorded_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    success                boolean     NOT NULL,
    total_seconds          numeric,
    within_target_window   boolean,
    within_hard_window     boolean,
    source_rows_per_second numeric,
    kpi                    jsonb       NOT NULL,
    CONSTRAINT kpi_pkey PRIMARY KEY (batch_id),
    CONSTRAINT kpi_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id)
);

-- Alerts look up the latest state of an alert among a batch's events.
CREATE INDEX event_batch_kind_idx ON batch.event (batch_id, kind, event_id);

-- Statement statistics for the health views and the dashboard. The extension
-- is not trusted, so only a superuser can create it: do it here when the
-- migrating user is one and the server has it; otherwise the views say how.
DO $$
DECLARE
    v_role text := current_user;
BEGIN
    IF EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_stat_statements')
       AND EXISTS (SELECT FROM pg_namespace WHERE nspname = 'public')
       AND NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_stat_statements')
       AND (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
        RESET ROLE;
        CREATE EXTENSION pg_stat_statements SCHEMA public;
        EXECUTE format('SET LOCAL ROLE %I', v_role);
    END IF;
END
$$;
