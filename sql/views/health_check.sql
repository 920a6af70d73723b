-- For DBAs: the database's health as checks, one row each: OK, INFO, WARNING
-- or CRITICAL, the penalty it takes off the health score of 100
-- (batch.health_score), what was measured, and what to do about it.
CREATE OR REPLACE VIEW batch.health_check AS
WITH conn AS (
    SELECT (SELECT count(*) FROM pg_stat_activity AS a
            WHERE a.backend_type = 'client backend') AS used,
           current_setting('max_connections')::integer
           - current_setting('superuser_reserved_connections')::integer AS usable
), cache AS (
    SELECT d.blks_hit, d.blks_read,
           d.blks_hit::numeric / nullif(d.blks_hit + d.blks_read, 0) AS ratio,
           d.temp_bytes
    FROM pg_stat_database AS d WHERE d.datname = current_database()
), waits AS (
    SELECT count(*) AS waiters, coalesce(max(lw.waiting_seconds), 0) AS longest,
           count(DISTINCT lw.root_blocker) AS roots
    FROM batch.health_lock_waits AS lw
), idle AS (
    SELECT count(*) AS sessions,
           coalesce(max(extract(epoch FROM clock_timestamp() - a.state_change)), 0) AS longest
    FROM pg_stat_activity AS a
    WHERE a.state IN ('idle in transaction', 'idle in transaction (aborted)')
      AND a.state_change < clock_timestamp() - interval '60 seconds'
), xact AS (
    SELECT coalesce(max(extract(epoch FROM clock_timestamp() - a.xact_start)), 0) AS longest
    FROM pg_stat_activity AS a
    WHERE a.backend_type = 'client backend' AND a.xact_start IS NOT NULL
), bloat AS (
    SELECT count(*) AS relations, coalesce(sum(b.estimated_bloat_bytes), 0) AS bytes
    FROM batch.health_bloat AS b
    WHERE b.estimated_bloat_ratio > 0.5 AND b.estimated_bloat_bytes > 64 * 1024 * 1024
), dead AS (
    SELECT count(*) AS tables
    FROM pg_stat_user_tables AS t
    WHERE t.n_dead_tup > 100000
      AND t.n_dead_tup > 0.2 * (t.n_live_tup + t.n_dead_tup)
), wrap AS (
    SELECT age(d.datfrozenxid) AS xid_age FROM pg_database AS d
    WHERE d.datname = current_database()
), ckpt AS (
    SELECT b.checkpoints_timed, b.checkpoints_req FROM pg_stat_bgwriter AS b
), stmts AS (
    SELECT coalesce(bool_and(s.available), true) AS available, min(s.note) AS note
    FROM batch.statement_stats(1) AS s
), drafts AS (
    -- Drafts hold their staging tables' space until finalized or discarded.
    SELECT count(*) FILTER (WHERE r.started_at < clock_timestamp() - st.draft_max_age) AS old,
           count(*) AS drafts,
           min(r.batch_id) FILTER (WHERE r.started_at < clock_timestamp() - st.draft_max_age)
               AS oldest,
           max(st.draft_max_age) AS max_age
    FROM gl.setting AS st
    LEFT JOIN batch.run AS r ON r.mode = 'DRAFT' AND r.status NOT IN ('COMMITTED', 'CANCELLED')
), premade AS (
    SELECT p.base_period, p.months FROM gl.premade_months() AS p
), checks (check_name, status, penalty, value, detail, action) AS (
    SELECT 'connections',
           CASE WHEN c.used > 0.95 * c.usable THEN 'CRITICAL'
                WHEN c.used > 0.8 * c.usable THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN c.used > 0.95 * c.usable THEN 30 WHEN c.used > 0.8 * c.usable THEN 15
                ELSE 0 END,
           c.used || '/' || c.usable,
           format('%s client connections of %s usable (max_connections less the superuser '
                  'reserve)', c.used, c.usable),
           'See batch.health_connections for who holds them; end idle ones, use fewer '
           'workers, or raise max_connections (monthend tune)'
    FROM conn AS c
    UNION ALL
    SELECT 'cache_hit_ratio',
           CASE WHEN ca.blks_hit + ca.blks_read < 10000 THEN 'OK'
                WHEN ca.ratio < 0.90 THEN 'CRITICAL'
                WHEN ca.ratio < 0.99 THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN ca.blks_hit + ca.blks_read < 10000 THEN 0
                WHEN ca.ratio < 0.90 THEN 25 WHEN ca.ratio < 0.99 THEN 10 ELSE 0 END,
           coalesce(round(ca.ratio, 4)::text, 'n/a'),
           CASE WHEN ca.blks_hit + ca.blks_read < 10000
                THEN 'too few block reads yet to judge'
                ELSE format('%s of %s block reads served from shared_buffers',
                            ca.blks_hit, ca.blks_hit + ca.blks_read) END,
           'Raise shared_buffers (monthend tune: 25% of RAM); see batch.health_cache'
    FROM cache AS ca
    UNION ALL
    SELECT 'lock_waits',
           CASE WHEN w.longest > 60 THEN 'CRITICAL' WHEN w.longest > 5 THEN 'WARNING'
                ELSE 'OK' END,
           CASE WHEN w.longest > 60 THEN 25 WHEN w.longest > 5 THEN 10 ELSE 0 END,
           w.waiters::text,
           format('%s sessions waiting for locks, longest %s s, behind %s root blocker(s)',
                  w.waiters, round(w.longest, 1), w.roots),
           'See batch.health_lock_waits: the root_blocker session holds everyone up; end it '
           '(pg_terminate_backend) if it is not part of the run'
    FROM waits AS w
    UNION ALL
    SELECT 'idle_in_transaction',
           CASE WHEN i.longest > 600 THEN 'CRITICAL' WHEN i.sessions > 0 THEN 'WARNING'
                ELSE 'OK' END,
           CASE WHEN i.longest > 600 THEN 20 WHEN i.sessions > 0 THEN 10 ELSE 0 END,
           i.sessions::text,
           format('%s sessions idle in a transaction for over 60 s (longest %s s): they hold '
                  'locks and keep VACUUM from cleaning up', i.sessions, round(i.longest)),
           'Find them in batch.health_connections; fix the client or set '
           'idle_in_transaction_session_timeout'
    FROM idle AS i
    UNION ALL
    SELECT 'long_transactions',
           CASE WHEN x.longest > 7200 THEN 'CRITICAL' WHEN x.longest > 1800 THEN 'WARNING'
                ELSE 'OK' END,
           CASE WHEN x.longest > 7200 THEN 20 WHEN x.longest > 1800 THEN 10 ELSE 0 END,
           round(x.longest)::text,
           format('the oldest open transaction is %s s old', round(x.longest)),
           'Long transactions hold back VACUUM and can block the commit''s ATTACH PARTITION; '
           'see batch.health_connections'
    FROM xact AS x
    UNION ALL
    SELECT 'bloat',
           CASE WHEN b.relations > 0 THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN b.relations > 0 THEN 10 ELSE 0 END,
           b.relations::text,
           format('%s tables or indexes over half bloat and 64 MB (%s MB wasted, estimated)',
                  b.relations, round(b.bytes / 1048576.0)),
           'See batch.health_bloat; VACUUM (FULL) or REINDEX CONCURRENTLY outside the window'
    FROM bloat AS b
    UNION ALL
    SELECT 'dead_tuples',
           CASE WHEN dt.tables > 0 THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN dt.tables > 0 THEN 5 ELSE 0 END,
           dt.tables::text,
           format('%s tables with over 100,000 dead tuples and 20%% of their rows', dt.tables),
           'VACUUM them, and check that autovacuum keeps up (batch.health_bloat)'
    FROM dead AS dt
    UNION ALL
    SELECT 'xid_wraparound',
           CASE WHEN wr.xid_age > 1200000000 THEN 'CRITICAL'
                WHEN wr.xid_age > 500000000 THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN wr.xid_age > 1200000000 THEN 40 WHEN wr.xid_age > 500000000 THEN 10
                ELSE 0 END,
           wr.xid_age::text,
           format('oldest unfrozen transaction id is %s transactions old', wr.xid_age),
           'VACUUM (FREEZE) the oldest tables before the next batch'
    FROM wrap AS wr
    UNION ALL
    SELECT 'checkpoints',
           CASE WHEN ck.checkpoints_req > 10 AND ck.checkpoints_req > ck.checkpoints_timed
                THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN ck.checkpoints_req > 10 AND ck.checkpoints_req > ck.checkpoints_timed
                THEN 5 ELSE 0 END,
           ck.checkpoints_req || ' requested / ' || ck.checkpoints_timed || ' timed',
           'checkpoints forced by WAL volume rather than by checkpoint_timeout',
           'Raise max_wal_size for the batch window (monthend tune)'
    FROM ckpt AS ck
    UNION ALL
    SELECT 'temp_files',
           CASE WHEN ca.temp_bytes > 1073741824 THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN ca.temp_bytes > 1073741824 THEN 5 ELSE 0 END,
           pg_size_pretty(ca.temp_bytes),
           'sorts and hashes spilled to disk since the statistics were reset',
           'Raise work_mem for the batch window (monthend tune)'
    FROM cache AS ca
    UNION ALL
    SELECT 'statement_statistics',
           CASE WHEN s.available THEN 'OK' ELSE 'INFO' END,
           0,
           CASE WHEN s.available THEN 'available' ELSE 'unavailable' END,
           coalesce(s.note, 'pg_stat_statements is collecting statement times'),
           'Without it batch.health_slow_statements and the dashboard show no query times'
    FROM stmts AS s
    UNION ALL
    SELECT 'old_drafts',
           CASE WHEN d.old > 0 THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN d.old > 0 THEN 5 ELSE 0 END,
           d.old || '/' || d.drafts,
           format('drafts older than gl.setting.draft_max_age (%s), of %s unfinished drafts',
                  d.max_age, d.drafts),
           CASE WHEN d.old > 0
                THEN format('Finalize or discard them (monthend finalize %s / monthend discard '
                            '%s): their staging tables hold space', d.oldest, d.oldest)
                ELSE 'Nothing to do' END
    FROM drafts AS d
    UNION ALL
    SELECT 'partitions_premade',
           CASE WHEN pm.months < 1 THEN 'WARNING' ELSE 'OK' END,
           CASE WHEN pm.months < 1 THEN 5 ELSE 0 END,
           pm.months || ' month(s)',
           format('months after %s (the latest open period, or this month) whose ledger '
                  'partitions are made', pm.base_period),
           CASE WHEN pm.months < 1
                THEN 'Make them before the next run needs them: monthend partitions ensure '
                     '--ahead 3 (schedule it monthly)'
                ELSE 'Nothing to do' END
    FROM premade AS pm
)
SELECT ch.check_name, ch.status, ch.penalty, ch.value, ch.detail, ch.action
FROM checks AS ch;

GRANT SELECT ON batch.health_check TO monthend_runner, monthend_auditor;
