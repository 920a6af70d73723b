-- For DBAs: buffer cache hit ratios (blocks found in shared_buffers over all
-- blocks read) since the statistics were last reset: this database, heap and
-- index blocks of all its tables, and the ten tables that read most from
-- disk. Below 0.99 during the run, shared_buffers is too small for it.
CREATE OR REPLACE VIEW batch.health_cache AS
SELECT 'database' AS scope, d.datname::text AS object, d.blks_hit AS hits, d.blks_read AS reads,
       round(d.blks_hit::numeric / nullif(d.blks_hit + d.blks_read, 0), 4) AS hit_ratio
FROM pg_stat_database AS d
WHERE d.datname = current_database()
UNION ALL
SELECT 'heap', 'all tables', sum(t.heap_blks_hit)::bigint, sum(t.heap_blks_read)::bigint,
       round(sum(t.heap_blks_hit) / nullif(sum(t.heap_blks_hit) + sum(t.heap_blks_read), 0), 4)
FROM pg_statio_user_tables AS t
UNION ALL
SELECT 'index', 'all indexes', sum(t.idx_blks_hit)::bigint, sum(t.idx_blks_read)::bigint,
       round(sum(t.idx_blks_hit) / nullif(sum(t.idx_blks_hit) + sum(t.idx_blks_read), 0), 4)
FROM pg_statio_user_tables AS t
UNION ALL
(SELECT 'table', t.schemaname || '.' || t.relname, t.heap_blks_hit, t.heap_blks_read,
        round(t.heap_blks_hit::numeric / nullif(t.heap_blks_hit + t.heap_blks_read, 0), 4)
 FROM pg_statio_user_tables AS t
 WHERE t.heap_blks_read > 0
 ORDER BY t.heap_blks_read DESC
 LIMIT 10);

GRANT SELECT ON batch.health_cache TO monthend_runner, monthend_auditor;
