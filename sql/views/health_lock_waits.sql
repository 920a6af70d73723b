-- For DBAs: every session waiting for a lock, with who blocks it
-- (pg_blocking_pids) and the whole blocking chain up to the session at its
-- root, the one to look at (or end with pg_terminate_backend) first.
-- blocking_chain lists pids from the waiter to the root.
CREATE OR REPLACE VIEW batch.health_lock_waits AS
WITH RECURSIVE waiting AS (
    SELECT a.pid, pg_blocking_pids(a.pid) AS blocked_by
    FROM pg_stat_activity AS a
    WHERE a.wait_event_type = 'Lock'
), chain AS (
    SELECT w.pid, b.pid AS blocker, ARRAY[w.pid, b.pid] AS path
    FROM waiting AS w
    CROSS JOIN LATERAL unnest(w.blocked_by) AS b(pid)
    UNION ALL
    SELECT c.pid, b.pid, c.path || b.pid
    FROM chain AS c
    JOIN waiting AS w ON w.pid = c.blocker
    CROSS JOIN LATERAL unnest(w.blocked_by) AS b(pid)
    WHERE b.pid <> ALL (c.path)
), longest AS (
    SELECT DISTINCT ON (c.pid) c.pid, c.path
    FROM chain AS c
    ORDER BY c.pid, cardinality(c.path) DESC, c.path
)
SELECT a.pid,
       a.datname,
       a.usename,
       a.application_name,
       a.wait_event_type,
       a.wait_event,
       (SELECT l.locktype || coalesce(' on ' || l.relation::regclass::text, '')
               || ' (' || l.mode || ')'
        FROM pg_locks AS l WHERE l.pid = a.pid AND NOT l.granted LIMIT 1) AS waiting_for,
       round(extract(epoch FROM clock_timestamp() - a.query_start), 1) AS waiting_seconds,
       w.blocked_by,
       lg.path AS blocking_chain,
       lg.path[cardinality(lg.path)] AS root_blocker,
       root.state AS root_state,
       root.application_name AS root_application,
       round(extract(epoch FROM clock_timestamp() - root.xact_start), 1) AS root_xact_seconds,
       left(root.query, 200) AS root_query,
       left(a.query, 200) AS query
FROM waiting AS w
JOIN pg_stat_activity AS a ON a.pid = w.pid
LEFT JOIN longest AS lg ON lg.pid = w.pid
LEFT JOIN pg_stat_activity AS root ON root.pid = lg.path[cardinality(lg.path)]
WHERE cardinality(w.blocked_by) > 0
ORDER BY waiting_seconds DESC NULLS LAST;

GRANT SELECT ON batch.health_lock_waits TO monthend_runner, monthend_auditor;
