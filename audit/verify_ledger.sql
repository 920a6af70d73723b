-- Checks the ledger as a whole, across every batch and period, for what no
-- single batch's seal can show:
--   SOURCE_POSTED_TWICE     a source row's journal entry (source_type,
--                           source_id, je_seq) live more than once (a posting
--                           is live unless a reversing entry of the same
--                           source row and entry names it), or its reversing
--                           entries not one for each posting they name;
--   NUMBER_GAP, NUMBER_DUPLICATE, NUMBER_BEYOND_USED, NUMBER_MALFORMED
--                           a period's je_numbers are not exactly 1..N, N being
--                           gl.accounting_period.je_numbers_used;
--   NUMBERS_USED_MISMATCH   N is not what the period's committed batches used;
--   BATCH_ROWS_MISMATCH     a committed batch's ledger rows differ in number
--                           from batch.run, or ledger rows belong to a batch
--                           that is not committed.
-- An ARCHIVED period's entries are in its archive (`monthend verify
-- --archive`): its numbering and batches are not checked here, nor are the
-- source rows of a reversal with one side archived.
-- Each check reads the ledger once (the header table for the first two, both
-- tables for the last), aggregating in the database: on 30M headers a month
-- this is the cost of a few sequential scans. At most 20 rows per period and
-- problem name a je_number (one more row counts the rest).
-- Columns: period and batch_id where they apply, problem, detail, and the
-- je_number concerned. One row per problem; no rows: all is well.
CREATE OR REPLACE FUNCTION audit.verify_ledger()
RETURNS TABLE (period text, batch_id bigint, problem text, detail text, je_number text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_listed CONSTANT integer := 20;
    -- Batches on either side of a reversal with one side archived: the
    -- entries of the other side are in an archive, so their source rows
    -- cannot be counted here (the archive holds them).
    v_linked CONSTANT bigint[] := ARRAY(
        SELECT unnest(ARRAY[r.batch_id, r.reverses_batch_id])
        FROM batch.run AS r
        JOIN batch.run AS o ON o.batch_id = r.reverses_batch_id
        JOIN gl.accounting_period AS rp ON rp.period = r.period
        JOIN gl.accounting_period AS op ON op.period = o.period
        WHERE r.kind IN ('REVERSAL', 'AUTO_REVERSAL')
          AND 'ARCHIVED' IN (rp.status, op.status));
BEGIN
    -- A source row's entry posted twice, whichever batches and periods hold
    -- the copies; the row names the highest je_number and batch among them.
    RETURN QUERY
    WITH twice AS (
        -- Plain aggregates only, so this can hash instead of sorting the ledger.
        -- A posting is live unless a reversing entry names it (reverses_je_id);
        -- a source row's entry must be live at most once, and every reversing
        -- entry must name a posting of the same source row and entry, once.
        SELECT h.source_type, h.source_id, h.je_seq,
               count(*) FILTER (WHERE h.reverses_je_id IS NULL) AS copies,
               count(*) FILTER (WHERE h.reverses_je_id IS NOT NULL) AS reversals,
               count(*) FILTER (WHERE h.reverses_je_id IS NULL AND r.reverses_je_id IS NULL)
                   AS live,
               min(h.je_number) AS first_je_number, max(h.je_number) AS je_number,
               min(h.batch_id) AS first_batch_id, max(h.batch_id) AS batch_id,
               max(h.period) AS period
        FROM gl.journal_entry_header AS h
        LEFT JOIN (SELECT DISTINCT x.reverses_je_id, x.source_type, x.source_id, x.je_seq
                   FROM gl.journal_entry_header AS x
                   WHERE x.reverses_je_id IS NOT NULL) AS r
               ON r.reverses_je_id = h.je_id AND r.source_type = h.source_type
              AND r.source_id = h.source_id AND r.je_seq = h.je_seq
        GROUP BY h.source_type, h.source_id, h.je_seq
        HAVING (count(*) FILTER (WHERE h.reverses_je_id IS NULL AND r.reverses_je_id IS NULL) > 1
                OR count(*) FILTER (WHERE h.reverses_je_id IS NULL)
                   - count(*) FILTER (WHERE h.reverses_je_id IS NOT NULL)
                   <> count(*) FILTER (WHERE h.reverses_je_id IS NULL
                                         AND r.reverses_je_id IS NULL))
           AND NOT bool_or(h.batch_id = ANY (v_linked))
    ), listed AS (
        SELECT t.*, row_number() OVER (PARTITION BY t.period
                                       ORDER BY t.source_type, t.source_id, t.je_seq) AS k,
               count(*) OVER (PARTITION BY t.period) AS n
        FROM twice AS t
    )
    SELECT l.period, l.batch_id, 'SOURCE_POSTED_TWICE'::text,
           format('%s %s entry %s is posted %s times%s: je_numbers %s to %s, batches %s to %s',
                  l.source_type, l.source_id, l.je_seq, l.copies,
                  CASE WHEN l.reversals > 0
                       THEN format(' and reversed %s times (%s live)', l.reversals, l.live)
                       ELSE '' END,
                  l.first_je_number, l.je_number, l.first_batch_id, l.batch_id),
           l.je_number
    FROM listed AS l
    WHERE l.k <= c_listed
    UNION ALL
    SELECT l.period, NULL::bigint, 'SOURCE_POSTED_TWICE',
           format('%s more source rows of period %s posted more than once, not listed',
                  l.n - c_listed, l.period), NULL::text
    FROM listed AS l
    WHERE l.k = c_listed + 1;

    -- Each period's je_numbers against 1..N, in one ordered pass: a gap is
    -- found between neighbours, so missing numbers are reported as ranges
    -- without generating 1..N.
    RETURN QUERY
    WITH numbered AS (
        SELECT h.period, h.batch_id, h.je_id, h.je_number,
               -- The number is what follows '<period>-', when formatting it
               -- back (gl.format_je_number) gives the je_number exactly.
               CASE WHEN substr(h.je_number, length(h.period) + 2) ~ '^[0-9]{1,18}$'
                    THEN CASE WHEN gl.format_je_number(h.period, substr(
                                       h.je_number, length(h.period) + 2)::bigint) = h.je_number
                              THEN substr(h.je_number, length(h.period) + 2)::bigint END
               END AS no
        FROM gl.journal_entry_header AS h
    ), neighbours AS (
        -- The full join keeps periods without any header (je_id NULL).
        SELECT coalesce(n.period, ap.period::text) AS period, n.batch_id, n.je_id,
               n.je_number, n.no, ap.je_numbers_used AS used,
               ap.period IS NOT NULL AS known_period,
               row_number() OVER w AS pos, lead(n.no) OVER w AS next_no,
               count(*) OVER (PARTITION BY coalesce(n.period, ap.period::text), n.no) AS copies,
               row_number() OVER (PARTITION BY coalesce(n.period, ap.period::text), n.no
                                  ORDER BY n.batch_id, n.je_id) AS copy_no
        FROM numbered AS n
        FULL JOIN (SELECT x.* FROM gl.accounting_period AS x WHERE x.status <> 'ARCHIVED') AS ap
               ON ap.period = n.period
        WINDOW w AS (PARTITION BY coalesce(n.period, ap.period::text)
                     ORDER BY n.no, n.batch_id, n.je_id)
    ), candidate AS MATERIALIZED (
        -- Only rows that can report something: a clean period keeps two.
        SELECT x.* FROM neighbours AS x
        WHERE x.pos = 1 OR x.no IS NULL OR x.copies > 1 OR NOT x.known_period
           OR x.no < 1 OR x.no >= x.used OR x.next_no IS NULL OR x.next_no > x.no + 1
    ), found AS (
        SELECT x.period, x.batch_id, 'NUMBER_MALFORMED' AS problem, x.je_number,
               format('je_id %s (batch %s) carries je_number %L, not %s-<10 digits>', x.je_id,
                      x.batch_id, x.je_number, x.period) AS detail
        FROM candidate AS x
        WHERE x.no IS NULL AND x.je_id IS NOT NULL
        UNION ALL
        SELECT x.period, x.batch_id, 'NUMBER_DUPLICATE', x.je_number,
               format('%s is carried by %s headers; this one is je_id %s of batch %s',
                      x.je_number, x.copies, x.je_id, x.batch_id)
        FROM candidate AS x
        WHERE x.no IS NOT NULL AND x.copies > 1 AND x.copy_no > 1
        UNION ALL
        SELECT x.period, x.batch_id, 'NUMBER_BEYOND_USED', x.je_number,
               CASE WHEN x.known_period
                    THEN format('%s (je_id %s, batch %s) is beyond the %s numbers period %s has '
                                'used', x.je_number, x.je_id, x.batch_id, x.used, x.period)
                    ELSE format('%s (je_id %s, batch %s) is in period %s, which '
                                'gl.accounting_period does not have', x.je_number, x.je_id,
                                x.batch_id, x.period) END
        FROM candidate AS x
        WHERE x.no IS NOT NULL AND (NOT x.known_period OR x.no > x.used OR x.no < 1)
          AND x.copy_no = 1
        UNION ALL
        -- Numbers missing before the first one used.
        SELECT x.period, NULL::bigint, 'NUMBER_GAP',
               gl.format_je_number(x.period, 1),
               format('je_numbers %s..%s are missing (period %s has used %s)',
                      gl.format_je_number(x.period, 1),
                      gl.format_je_number(x.period, least(x.no - 1, x.used)), x.period, x.used)
        FROM candidate AS x
        WHERE x.known_period AND x.pos = 1 AND x.no > 1 AND x.used >= 1
        UNION ALL
        -- Numbers missing after this one, up to the next one used or N.
        SELECT x.period, NULL::bigint, 'NUMBER_GAP',
               gl.format_je_number(x.period, x.no + 1),
               format('je_numbers %s..%s are missing (period %s has used %s)',
                      gl.format_je_number(x.period, x.no + 1),
                      gl.format_je_number(x.period,
                                          least(coalesce(x.next_no - 1, x.used), x.used)),
                      x.period, x.used)
        FROM candidate AS x
        WHERE x.known_period AND x.no IS NOT NULL AND x.no >= 0 AND x.no < x.used
          AND (x.next_no IS NULL OR x.next_no > x.no + 1)
        UNION ALL
        -- A period that used numbers and has no valid one in the ledger.
        SELECT x.period, NULL::bigint, 'NUMBER_GAP',
               gl.format_je_number(x.period, 1),
               format('je_numbers %s..%s are missing: the period has used %s and the '
                      'ledger holds none of them', gl.format_je_number(x.period, 1),
                      gl.format_je_number(x.period, x.used), x.used)
        FROM candidate AS x
        WHERE x.known_period AND x.used > 0 AND x.pos = 1 AND x.no IS NULL
    ), listed AS (
        SELECT f.*, row_number() OVER (PARTITION BY f.period, f.problem
                                       ORDER BY f.je_number, f.batch_id) AS k,
               count(*) OVER (PARTITION BY f.period, f.problem) AS n
        FROM found AS f
    )
    SELECT l.period, l.batch_id, l.problem, l.detail, l.je_number
    FROM listed AS l
    WHERE l.k <= c_listed
    UNION ALL
    SELECT l.period, NULL::bigint, l.problem,
           format('%s more with %s in period %s, not listed', l.n - c_listed, l.problem,
                  l.period), NULL::text
    FROM listed AS l
    WHERE l.k = c_listed + 1
    UNION ALL
    SELECT ap.period, NULL::bigint, 'NUMBERS_USED_MISMATCH',
           format('period %s says %s je_numbers used; its committed batches used %s',
                  ap.period, ap.je_numbers_used, coalesce(b.used, 0)),
           NULL::text
    FROM gl.accounting_period AS ap
    LEFT JOIN (SELECT r.period, sum(r.je_count) AS used FROM batch.run AS r
               WHERE r.status = 'COMMITTED' GROUP BY r.period) AS b ON b.period = ap.period
    WHERE ap.je_numbers_used <> coalesce(b.used, 0);

    -- Ledger rows per batch against batch.run.
    RETURN QUERY
    WITH ledger AS (
        SELECT coalesce(h.batch_id, l.batch_id) AS batch_id, coalesce(h.n, 0) AS headers,
               coalesce(l.n, 0) AS lines
        FROM (SELECT x.batch_id, count(*) AS n FROM gl.journal_entry_header AS x
              GROUP BY x.batch_id) AS h
        FULL JOIN (SELECT y.batch_id, count(*) AS n FROM gl.journal_entry_line AS y
                   GROUP BY y.batch_id) AS l ON l.batch_id = h.batch_id
    )
    SELECT coalesce(r.period, o.period), coalesce(r.batch_id, g.batch_id),
           'BATCH_ROWS_MISMATCH'::text,
           CASE WHEN r.batch_id IS NOT NULL
                THEN format('batch %s: %s headers and %s lines in the ledger, batch.run says '
                            '%s and %s', r.batch_id, coalesce(g.headers, 0),
                            coalesce(g.lines, 0), coalesce(r.je_count, 0),
                            coalesce(r.line_count, 0))
                ELSE format('batch %s is %s, yet the ledger holds %s headers and %s lines of it',
                            g.batch_id, coalesce(o.status, 'not in batch.run'), g.headers,
                            g.lines) END,
           NULL::text
    FROM (SELECT x.batch_id, x.period, x.je_count, x.line_count FROM batch.run AS x
          WHERE x.status = 'COMMITTED'
            AND NOT EXISTS (SELECT FROM gl.accounting_period AS ap
                            WHERE ap.period = x.period AND ap.status = 'ARCHIVED')) AS r
    FULL JOIN ledger AS g ON g.batch_id = r.batch_id
    LEFT JOIN batch.run AS o ON o.batch_id = g.batch_id
    WHERE (r.batch_id IS NOT NULL
           AND (coalesce(g.headers, 0) <> coalesce(r.je_count, 0)
                OR coalesce(g.lines, 0) <> coalesce(r.line_count, 0)))
       OR (r.batch_id IS NULL AND g.headers + g.lines > 0);
END
$$;

GRANT EXECUTE ON FUNCTION audit.verify_ledger() TO monthend_runner, monthend_auditor;
