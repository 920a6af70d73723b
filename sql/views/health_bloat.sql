-- For DBAs: estimated bloat of tables and B-tree indexes of this database
-- (user schemas, 8 pages and more), largest waste first. The estimate compares
-- the pages a relation has with the pages its rows would need at its
-- fillfactor, from planner statistics (pg_stats average widths and null
-- fractions, reltuples): it needs ANALYZE, is rough for rows with large TOASTed
-- values, and a NULL estimate means no statistics. Dead tuples come from the
-- statistics collector. Rebuild what wastes much with VACUUM (FULL) or
-- REINDEX CONCURRENTLY outside the batch window.
CREATE OR REPLACE VIEW batch.health_bloat AS
WITH consts AS (
    SELECT current_setting('block_size')::numeric AS bs
), tbl AS (
    SELECT c.oid, n.nspname, c.relname, c.relpages, c.reltuples,
           coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::numeric
                     FROM unnest(c.reloptions) AS o WHERE o LIKE 'fillfactor=%'), 100)
               AS fillfactor,
           (SELECT sum((1 - s.null_frac) * s.avg_width)
            FROM pg_stats AS s
            WHERE s.schemaname = n.nspname AND s.tablename = c.relname
              AND NOT s.inherited) AS data_width,
           (SELECT count(*) FROM pg_stats AS s
            WHERE s.schemaname = n.nspname AND s.tablename = c.relname
              AND NOT s.inherited) AS stat_columns,
           (SELECT count(*) FROM pg_attribute AS a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%'
      AND c.relpages >= 8
), tbl_est AS (
    SELECT t.*,
           -- 24-byte tuple header, data aligned to 8 bytes, 4-byte line pointer.
           CASE WHEN t.stat_columns = t.columns AND t.reltuples >= 0 THEN
               ceil(t.reltuples::numeric / greatest(floor((k.bs * t.fillfactor / 100 - 24)
                                                 / (24 + ceil(t.data_width::numeric / 8) * 8 + 4)), 1))
           END AS expected_pages
    FROM tbl AS t CROSS JOIN consts AS k
), idx AS (
    SELECT i.indexrelid, n.nspname, ic.relname AS index_name, tc.relname AS table_name,
           ic.relpages, ic.reltuples,
           coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::numeric
                     FROM unnest(ic.reloptions) AS o WHERE o LIKE 'fillfactor=%'), 90)
               AS fillfactor,
           (SELECT sum((1 - s.null_frac) * s.avg_width)
            FROM unnest(i.indkey::smallint[]) AS k(attnum)
            JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            JOIN pg_stats AS s ON s.schemaname = n.nspname AND s.tablename = tc.relname
                              AND s.attname = a.attname AND NOT s.inherited) AS data_width,
           (SELECT count(*)
            FROM unnest(i.indkey::smallint[]) AS k(attnum)
            JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            JOIN pg_stats AS s ON s.schemaname = n.nspname AND s.tablename = tc.relname
                              AND s.attname = a.attname AND NOT s.inherited) AS stat_columns,
           i.indnatts AS columns,
           0 <> ALL (i.indkey::smallint[]) AS plain_columns
    FROM pg_index AS i
    JOIN pg_class AS ic ON ic.oid = i.indexrelid
    JOIN pg_class AS tc ON tc.oid = i.indrelid
    JOIN pg_namespace AS n ON n.oid = ic.relnamespace
    JOIN pg_am AS am ON am.oid = ic.relam
    WHERE am.amname = 'btree'
      AND ic.relkind = 'i'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%'
      AND ic.relpages >= 8
), idx_est AS (
    SELECT x.*,
           -- 8-byte index tuple header, key aligned to 8, 4-byte line pointer;
           -- 24-byte page header and 16-byte B-tree special space; one meta page.
           CASE WHEN x.plain_columns AND x.stat_columns = x.columns AND x.reltuples >= 0 THEN
               1 + ceil(x.reltuples::numeric / greatest(floor(((k.bs - 40) * x.fillfactor / 100)
                                                     / (8 + ceil(x.data_width::numeric / 8) * 8 + 4)), 1))
           END AS expected_pages
    FROM idx AS x CROSS JOIN consts AS k
)
SELECT 'table' AS kind,
       t.nspname AS schema_name,
       t.relname AS relation,
       t.relname AS table_name,
       t.relpages::bigint * k.bs::bigint AS size_bytes,
       (greatest(t.relpages - t.expected_pages, 0) * k.bs)::bigint AS estimated_bloat_bytes,
       round(greatest(t.relpages - t.expected_pages, 0) / t.relpages::numeric, 3)
           AS estimated_bloat_ratio,
       st.n_live_tup AS live_tuples,
       st.n_dead_tup AS dead_tuples,
       round(st.n_dead_tup::numeric / nullif(st.n_live_tup + st.n_dead_tup, 0), 3)
           AS dead_tuple_ratio,
       greatest(st.last_vacuum, st.last_autovacuum) AS last_vacuum
FROM tbl_est AS t
CROSS JOIN consts AS k
LEFT JOIN pg_stat_all_tables AS st ON st.relid = t.oid
UNION ALL
SELECT 'index',
       x.nspname,
       x.index_name,
       x.table_name,
       x.relpages::bigint * k.bs::bigint,
       (greatest(x.relpages - x.expected_pages, 0) * k.bs)::bigint,
       round(greatest(x.relpages - x.expected_pages, 0) / x.relpages::numeric, 3),
       NULL, NULL, NULL, NULL
FROM idx_est AS x
CROSS JOIN consts AS k
ORDER BY estimated_bloat_bytes DESC NULLS LAST, size_bytes DESC;

GRANT SELECT ON batch.health_bloat TO monthend_runner, monthend_auditor;
