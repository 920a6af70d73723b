-- For DBAs: the 20 statements of this database that cost the most execution
-- time (pg_stat_statements), or one row with a note when it is unavailable.
CREATE OR REPLACE VIEW batch.health_slow_statements AS
SELECT s.available, s.note, s.queryid, s.calls, s.total_seconds, s.mean_ms, s.max_ms, s.rows,
       s.cache_hit_ratio, s.query
FROM batch.statement_stats(20) AS s;

GRANT SELECT ON batch.health_slow_statements TO monthend_runner, monthend_auditor;
