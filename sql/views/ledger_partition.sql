-- For DBAs: every partition of the ledger, one row each: the monthly
-- partitions of gl.journal_entry_header and gl.journal_entry_line (a period's
-- range of je_date) and, under each, the partitions its committed batches
-- attached (one a batch, by batch_id). With the period's status, the rows
-- (the planner's estimate, pg_class.reltuples: exact after the post-processing
-- ANALYZE, no scan here), the size on disk (the month's, with its batches'),
-- and where it lives: ATTACHED for a partition the ledger holds, RESTORED for
-- one brought back from an archive (`monthend restore`), and, for a period
-- let go to an archive (which has no partition left), one ARCHIVED row per
-- ledger table with the rows archived; archive names the archive's directory.
CREATE OR REPLACE VIEW gl.ledger_partition AS
WITH month AS (
    SELECT parent.relname AS ledger_table, c.oid, c.relname,
           (regexp_match(c.relname, '_([0-9]{4})_([0-9]{2})$')) AS ym
    FROM pg_class AS parent
    JOIN pg_namespace AS n ON n.oid = parent.relnamespace AND n.nspname = 'gl'
    JOIN pg_inherits AS i ON i.inhparent = parent.oid
    JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE parent.relname IN ('journal_entry_header', 'journal_entry_line')
)
SELECT m.ledger_table, m.ym[1] || '-' || m.ym[2] AS period, NULL::bigint AS batch_id,
       'gl.' || quote_ident(m.relname) AS partition_name,
       coalesce(b.rows, 0)::bigint AS rows,
       (pg_total_relation_size(m.oid) + coalesce(b.bytes, 0))::bigint AS bytes,
       ap.status AS period_status,
       CASE WHEN ap.status = 'RESTORED' THEN 'RESTORED' ELSE 'ATTACHED' END AS location,
       ap.status_detail ->> 'location' AS archive
FROM month AS m
LEFT JOIN gl.accounting_period AS ap ON ap.period = m.ym[1] || '-' || m.ym[2]
LEFT JOIN LATERAL (
    SELECT sum(greatest(c.reltuples, 0)) AS rows, sum(pg_total_relation_size(c.oid)) AS bytes
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = m.oid
) AS b ON true
UNION ALL
SELECT m.ledger_table, m.ym[1] || '-' || m.ym[2],
       (regexp_match(c.relname, '_b([0-9]+)$'))[1]::bigint,
       'gl.' || quote_ident(c.relname), greatest(c.reltuples, 0)::bigint,
       pg_total_relation_size(c.oid), ap.status,
       CASE WHEN ap.status = 'RESTORED' THEN 'RESTORED' ELSE 'ATTACHED' END,
       ap.status_detail ->> 'location'
FROM month AS m
JOIN pg_inherits AS i ON i.inhparent = m.oid
JOIN pg_class AS c ON c.oid = i.inhrelid
LEFT JOIN gl.accounting_period AS ap ON ap.period = m.ym[1] || '-' || m.ym[2]
UNION ALL
SELECT t.ledger_table, ap.period, NULL::bigint, NULL::text,
       (ap.status_detail ->> t.counted)::bigint, 0::bigint, ap.status, 'ARCHIVED',
       ap.status_detail ->> 'location'
FROM gl.accounting_period AS ap
CROSS JOIN (VALUES ('journal_entry_header', 'headers'),
                   ('journal_entry_line', 'lines')) AS t (ledger_table, counted)
WHERE ap.status = 'ARCHIVED';

GRANT SELECT ON gl.ledger_partition TO monthend_runner, monthend_auditor;
