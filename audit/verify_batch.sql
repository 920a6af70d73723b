-- Recomputes a committed batch's seal from the ledger rows as they are now and,
-- where the ledger differs, names the journal entries that differ and how.
--
-- The seal is the proof: at commit each range's digest (sha256 over the
-- canonical text of its headers and lines, range = its je_id block, in je_id
-- and line_no order) and the batch digest over them went into the audit
-- chain. Everything else here only locates damage, so it reads only what the
-- proof points at:
--   1. control rows: batch.run and batch.range (which give the je_id blocks
--      used below) agree with the seal and with each range's RANGE_DONE event;
--   2. one pass over the batch's ledger rows, range by range through the je_id
--      indexes of the batch's partitions (batch_id is their partition key),
--      recomputing each range's digest and its header and line counts;
--   3. index range scans for rows of the batch outside its je_id block, and
--      rows of other batches carrying a je_id of this batch's block;
--   4. only for ranges whose digest differs: per entry, duplicate je_ids,
--      lines without a header, entries that do not balance (in either
--      currency), headers without their template's number of lines, lines not
--      as their template says, je_numbers that do not follow from the je_id,
--      dates outside the period; and the range rebuilt from its claims the way
--      batch.process_range builds it. When the rebuilt range hashes to the
--      sealed digest it is the sealed content, so every row that differs from
--      it is named with the fields that changed. A reversal is checked instead
--      against the entries it reverses (audit.verify_reversal_mirror).
-- Cost on a batch of 30M headers and 90M lines: step 2 reads the batch's rows
-- once, in per-range pieces whose sorts stay in memory; steps 1 and 3 read
-- control rows and index ranges; step 4 grows with the damage, not the batch.
--
-- Columns: range_no (NULL: the batch as a whole or rows outside its ranges),
-- problem, detail, and the journal entry concerned (je_id, je_number) when
-- one can be named. At most 20 rows per range and problem name an entry (one
-- more row counts the rest), and at most 20 damaged ranges are examined entry
-- by entry (a row lists the others), so a ledger rewritten wholesale costs a
-- bounded search. One row per problem; no rows: all is well.

CREATE OR REPLACE FUNCTION audit.verify_batch(p_batch_id bigint)
RETURNS TABLE (range_no integer, problem text, detail text, je_id bigint, je_number text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Bounds on what locating reports and costs: entries listed per range and
    -- problem, and damaged ranges examined entry by entry.
    c_listed   CONSTANT integer := 20;
    c_examined CONSTANT integer := 20;
    v_run      batch.run%ROWTYPE;
    v_seal     jsonb;
    v_start    date;
    v_end      date;
    v_lo       bigint;
    v_hi       bigint;
    v_nos      integer[];
    v_lows     bigint[];
    v_damaged  integer[];
    v_found    jsonb;
    v_version  smallint;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    IF NOT FOUND OR v_run.status <> 'COMMITTED' THEN
        RETURN QUERY SELECT NULL::integer, 'NOT_COMMITTED'::text,
                            format('batch %s is %s, not COMMITTED', p_batch_id,
                                   coalesce(v_run.status, 'missing')),
                            NULL::bigint, NULL::text;
        RETURN;
    END IF;
    -- An archived period's entries are in its archive, not here: checked
    -- there, by `monthend verify --archive` against the same seal.
    IF EXISTS (SELECT FROM gl.accounting_period AS ap
               WHERE ap.period = v_run.period AND ap.status = 'ARCHIVED') THEN
        RETURN QUERY SELECT NULL::integer, 'PERIOD_ARCHIVED'::text,
                            format('batch %s is in period %s, archived to %s: verify it with '
                                   '`monthend verify --archive %s`', p_batch_id, v_run.period,
                                   ap.status_detail ->> 'location',
                                   ap.status_detail ->> 'location'),
                            NULL::bigint, NULL::text
                     FROM gl.accounting_period AS ap WHERE ap.period = v_run.period;
        RETURN;
    END IF;
    v_start := to_date(v_run.period, 'YYYY-MM');
    v_end := (v_start + interval '1 month - 1 day')::date;
    -- The batch's je_id block; an empty batch has none, so every row is outside.
    v_lo := coalesce(v_run.je_id_base, 1);
    v_hi := v_lo + coalesce(v_run.je_count, 0) - 1;

    SELECT l.payload INTO v_seal
      FROM audit.log AS l
     WHERE l.event = 'BATCH_COMMITTED' AND l.batch_id = p_batch_id
     ORDER BY l.seq DESC LIMIT 1;
    -- The seal version the chain sealed (seals before version 2 name none),
    -- whatever batch.run says now; a difference is reported below.
    v_version := CASE WHEN v_seal IS NULL THEN v_run.seal_version
                      ELSE coalesce((v_seal ->> 'seal_version')::smallint, 1) END;

    -- 1. The seal and the control rows the blocks are read from.
    RETURN QUERY
    WITH sealed AS (
        SELECT (x ->> 'range_no')::integer AS range_no, x ->> 'digest' AS digest
        FROM jsonb_array_elements(coalesce(v_seal -> 'ranges', '[]'::jsonb)) AS x
    ), done AS (
        SELECT DISTINCT ON ((l.payload ->> 'range_no')::integer)
               (l.payload ->> 'range_no')::integer AS range_no, l.seq,
               l.payload ->> 'digest' AS digest, (l.payload ->> 'entries')::bigint AS entries,
               (l.payload ->> 'lines')::bigint AS lines
        FROM audit.log AS l
        WHERE l.event = 'RANGE_DONE' AND l.batch_id = p_batch_id
        ORDER BY (l.payload ->> 'range_no')::integer, l.seq DESC
    ), rg AS (
        SELECT r.range_no, r.je_offset, r.je_count, r.line_count, encode(r.digest, 'hex') AS digest,
               coalesce(sum(r.je_count) OVER (ORDER BY r.range_no ROWS BETWEEN UNBOUNDED
                                              PRECEDING AND 1 PRECEDING), 0) AS tiled_offset
        FROM batch.range AS r WHERE r.batch_id = p_batch_id
    ), range_problem AS (
        SELECT coalesce(r.range_no, s.range_no, d.range_no) AS range_no,
               concat_ws('; ',
                   CASE WHEN r.range_no IS NULL THEN 'sealed, but batch.range has no such range' END,
                   CASE WHEN r.range_no IS NOT NULL AND s.range_no IS NULL AND v_seal IS NOT NULL
                        THEN 'in batch.range, but not in the seal' END,
                   CASE WHEN r.digest IS DISTINCT FROM s.digest AND r.range_no IS NOT NULL
                             AND s.range_no IS NOT NULL
                        THEN format('batch.range digest %s, sealed %s', r.digest, s.digest) END,
                   CASE WHEN d.range_no IS NULL THEN 'no RANGE_DONE event in audit.log' END,
                   CASE WHEN d.digest IS DISTINCT FROM s.digest AND d.range_no IS NOT NULL
                             AND s.range_no IS NOT NULL
                        THEN format('RANGE_DONE (row %s) digest %s, sealed %s', d.seq, d.digest,
                                    s.digest) END,
                   CASE WHEN r.range_no IS NOT NULL AND d.range_no IS NOT NULL
                             AND (d.entries IS DISTINCT FROM r.je_count::bigint
                                  OR d.lines IS DISTINCT FROM r.line_count::bigint)
                        THEN format('batch.range says %s entries and %s lines, RANGE_DONE (row %s) '
                                    '%s and %s', r.je_count, r.line_count, d.seq, d.entries,
                                    d.lines) END,
                   CASE WHEN r.je_offset <> r.tiled_offset
                        THEN format('je_offset %s, but the ranges before it hold %s entries',
                                    r.je_offset, r.tiled_offset) END) AS detail
        FROM rg AS r
        FULL JOIN sealed AS s ON s.range_no = r.range_no
        FULL JOIN done AS d ON d.range_no = coalesce(r.range_no, s.range_no)
    ), sealed_total AS (
        SELECT encode(audit.batch_root(v_version,
                                       coalesce(array_agg(decode(s.digest, 'hex')
                                                          ORDER BY s.range_no), '{}')),
                      'hex') AS digest
        FROM sealed AS s
    )
    SELECT NULL::integer, 'SEAL_MISSING'::text,
           format('no BATCH_COMMITTED event for batch %s in audit.log', p_batch_id),
           NULL::bigint, NULL::text
    WHERE v_seal IS NULL
    UNION ALL
    SELECT NULL, 'BATCH_DIGEST_MISMATCH',
           format('sealed batch digest %s, batch.run says %s', v_seal ->> 'digest',
                  encode(v_run.digest, 'hex')), NULL, NULL
    WHERE v_seal IS NOT NULL AND v_seal ->> 'digest' IS DISTINCT FROM encode(v_run.digest, 'hex')
    UNION ALL
    SELECT NULL, 'SEAL_INCONSISTENT',
           format('sealed batch digest %s, but its sealed range digests hash to %s',
                  v_seal ->> 'digest', t.digest), NULL, NULL
    FROM sealed_total AS t
    WHERE v_seal IS NOT NULL AND v_seal ->> 'digest' IS DISTINCT FROM t.digest
    UNION ALL
    SELECT NULL, 'BATCH_RECORD_MISMATCH',
           concat_ws('; ',
               CASE WHEN (v_seal ->> 'entries')::bigint IS DISTINCT FROM v_run.je_count
                      OR (v_seal ->> 'lines')::bigint IS DISTINCT FROM v_run.line_count
                    THEN format('sealed %s entries and %s lines, batch.run says %s and %s',
                                v_seal ->> 'entries', v_seal ->> 'lines', v_run.je_count,
                                v_run.line_count) END,
               CASE WHEN (v_seal ->> 'je_id_base')::bigint IS DISTINCT FROM v_run.je_id_base
                      OR (v_seal ->> 'je_number_base')::bigint
                         IS DISTINCT FROM v_run.je_number_base
                      OR v_seal ->> 'period' IS DISTINCT FROM v_run.period
                    THEN format('sealed period %s, je_id base %s, je_number base %s; batch.run '
                                'says %s, %s, %s', v_seal ->> 'period', v_seal ->> 'je_id_base',
                                v_seal ->> 'je_number_base', v_run.period, v_run.je_id_base,
                                v_run.je_number_base) END,
               CASE WHEN v_version IS DISTINCT FROM v_run.seal_version
                    THEN format('sealed by seal version %s, batch.run says %s', v_version,
                                v_run.seal_version) END,
               CASE WHEN t.entries <> coalesce(v_run.je_count, 0)
                      OR t.lines <> coalesce(v_run.line_count, 0)
                    THEN format('its ranges hold %s entries and %s lines, batch.run says %s and %s',
                                t.entries, t.lines, v_run.je_count, v_run.line_count) END),
           NULL, NULL
    FROM (SELECT coalesce(sum(r.je_count), 0) AS entries,
                 coalesce(sum(r.line_count), 0) AS lines FROM rg AS r) AS t
    WHERE (v_seal IS NOT NULL
           AND ((v_seal ->> 'entries')::bigint IS DISTINCT FROM v_run.je_count
                OR (v_seal ->> 'lines')::bigint IS DISTINCT FROM v_run.line_count
                OR (v_seal ->> 'je_id_base')::bigint IS DISTINCT FROM v_run.je_id_base
                OR (v_seal ->> 'je_number_base')::bigint IS DISTINCT FROM v_run.je_number_base
                OR v_seal ->> 'period' IS DISTINCT FROM v_run.period
                OR v_version IS DISTINCT FROM v_run.seal_version))
       OR t.entries <> coalesce(v_run.je_count, 0) OR t.lines <> coalesce(v_run.line_count, 0)
    UNION ALL
    SELECT p.range_no, 'RANGE_RECORD_MISMATCH',
           format('range %s: %s', p.range_no, p.detail), NULL, NULL
    FROM range_problem AS p
    WHERE p.detail <> ''
    ORDER BY 1 NULLS FIRST, 2;


    -- 2. Each range's digest and row counts, recomputed from the ledger rows of
    --    its block. The lateral query reads one range at a time through the
    --    header primary key and the line BRIN index (both lead with je_id), so
    --    every sort stays the size of a range. The per-range results are kept
    --    (a few values a range) for the steps below.
    WITH block AS (
        SELECT rg.range_no, rg.je_offset, rg.je_count, rg.line_count,
               v_run.je_id_base + rg.je_offset AS lo_je_id,
               v_run.je_id_base + rg.je_offset + rg.je_count - 1 AS hi_je_id
        FROM batch.range AS rg WHERE rg.batch_id = p_batch_id
    ), sealed AS (
        SELECT (x ->> 'range_no')::integer AS range_no, decode(x ->> 'digest', 'hex') AS digest
        FROM jsonb_array_elements(coalesce(v_seal -> 'ranges', '[]'::jsonb)) AS x
    ), recomputed AS (
        SELECT b.*, s.digest AS sealed_digest, c.digest, c.headers, c.lines, c.misdated
        FROM block AS b
        LEFT JOIN sealed AS s ON s.range_no = b.range_no
        CROSS JOIN LATERAL (
            -- The range's seal by the batch's version, as batch.process_range
            -- made it (audit.range_root).
            SELECT audit.range_root(v_version,
                       array_agg(e.entry_text ORDER BY e.je_id)
                           FILTER (WHERE v_version = 1),
                       array_agg(audit.entry_leaf_hash(e.entry_text) ORDER BY e.je_id)
                           FILTER (WHERE v_version = 2)) AS digest,
                   coalesce(sum(e.headers), 0) AS headers, coalesce(sum(e.lines), 0) AS lines,
                   count(*) FILTER (WHERE e.dates_differ) AS misdated
            FROM audit.ledger_entry_text(p_batch_id, v_version, b.lo_je_id,
                                         b.hi_je_id) AS e
        ) AS c
    )
    SELECT (SELECT coalesce(array_agg(r.range_no ORDER BY r.je_offset, r.range_no), '{}')
              FROM recomputed AS r),
           (SELECT coalesce(array_agg(r.lo_je_id ORDER BY r.je_offset, r.range_no), '{}')
              FROM recomputed AS r),
           (SELECT coalesce(array_agg(r.range_no ORDER BY r.range_no), '{}')
              FROM recomputed AS r
             WHERE r.sealed_digest IS NULL OR r.digest <> r.sealed_digest OR r.misdated > 0),
           (SELECT coalesce(jsonb_agg(p ORDER BY p.range_no, p.problem), '[]')
              FROM (SELECT r.range_no, 'RANGE_DIGEST_MISMATCH' AS problem,
                           format('range %s (je_id %s..%s): sealed %s, ledger rows hash to %s; '
                                  '%s headers and %s lines found, %s and %s sealed',
                                  r.range_no, r.lo_je_id, r.hi_je_id,
                                  encode(r.sealed_digest, 'hex'), encode(r.digest, 'hex'),
                                  r.headers, r.lines, r.je_count, r.line_count) AS detail
                    FROM recomputed AS r
                    WHERE r.sealed_digest IS NOT NULL AND r.digest <> r.sealed_digest
                    UNION ALL
                    SELECT r.range_no, 'LINE_DATE_MISMATCH',
                           format('range %s (je_id %s..%s): %s entries have lines dated '
                                  'otherwise than their header (seal version %s seals the date '
                                  'once, in the header)', r.range_no, r.lo_je_id, r.hi_je_id,
                                  r.misdated, v_version)
                    FROM recomputed AS r
                    WHERE r.misdated > 0
                    UNION ALL
                    SELECT r.range_no, 'RANGE_COUNT_MISMATCH',
                           format('range %s (je_id %s..%s): %s headers and %s lines in the '
                                  'ledger, the range recorded %s and %s', r.range_no,
                                  r.lo_je_id, r.hi_je_id, r.headers, r.lines, r.je_count,
                                  r.line_count)
                    FROM recomputed AS r
                    WHERE r.headers <> r.je_count
                       OR r.lines IS DISTINCT FROM r.line_count::bigint) AS p)
      INTO v_nos, v_lows, v_damaged, v_found;
    RETURN QUERY
    SELECT x.range_no, x.problem, x.detail, NULL::bigint, NULL::text
    FROM jsonb_to_recordset(v_found) AS x (range_no integer, problem text, detail text)
    ORDER BY x.range_no, x.problem;

    -- 3. Rows no range digest covers: rows of this batch outside its je_id
    --    block (a forged entry, say), and rows of other batches carrying a
    --    je_id of this block (a line moved to another batch). Index range scans.
    RETURN QUERY
    WITH stray AS (
        SELECT h.je_id, h.batch_id, 1 AS headers, 0 AS lines, h.je_number
        FROM gl.journal_entry_header AS h
        WHERE h.batch_id = p_batch_id AND (h.je_id < v_lo OR h.je_id > v_hi)
        UNION ALL
        SELECT l.je_id, l.batch_id, 0, 1, NULL::text
        FROM gl.journal_entry_line AS l
        WHERE l.batch_id = p_batch_id AND (l.je_id < v_lo OR l.je_id > v_hi)
        UNION ALL
        SELECT h.je_id, h.batch_id, 1, 0, h.je_number
        FROM gl.journal_entry_header AS h
        WHERE h.je_id BETWEEN v_lo AND v_hi AND h.batch_id <> p_batch_id
        UNION ALL
        SELECT l.je_id, l.batch_id, 0, 1, NULL::text
        FROM gl.journal_entry_line AS l
        WHERE l.je_id BETWEEN v_lo AND v_hi AND l.batch_id <> p_batch_id
    ), entry AS (
        SELECT s.je_id, s.batch_id, sum(s.headers) AS headers, sum(s.lines) AS lines,
               min(s.je_number) AS je_number,
               CASE WHEN s.batch_id = p_batch_id THEN 'ROWS_OUTSIDE_RANGES'
                    ELSE 'BATCH_ID_MISMATCH' END AS problem
        FROM stray AS s
        GROUP BY s.je_id, s.batch_id
    ), listed AS (
        SELECT e.*,
               CASE WHEN e.batch_id <> p_batch_id
                    THEN v_nos[width_bucket(e.je_id, v_lows)] END AS range_no,
               row_number() OVER (PARTITION BY e.problem ORDER BY e.je_id, e.batch_id) AS k,
               count(*) OVER (PARTITION BY e.problem) AS n
        FROM entry AS e
    )
    SELECT l.range_no, l.problem,
           CASE l.problem
               WHEN 'ROWS_OUTSIDE_RANGES' THEN
                   format('je_id %s%s: %s header(s) and %s line(s) of batch %s lie outside the '
                          'batch''s je_id block %s..%s, so no sealed digest covers them',
                          l.je_id, ' (' || l.je_number || ')', l.headers, l.lines, p_batch_id,
                          v_lo, v_hi)
               ELSE
                   format('je_id %s belongs to batch %s (range %s), but %s header(s) and %s '
                          'line(s) with it carry batch_id %s', l.je_id, p_batch_id,
                          l.range_no, l.headers, l.lines, l.batch_id)
           END,
           l.je_id,
           CASE WHEN l.problem = 'ROWS_OUTSIDE_RANGES' THEN l.je_number
                ELSE coalesce(l.je_number, gl.format_je_number(v_run.period,
                         v_run.je_number_base + (l.je_id - v_run.je_id_base) + 1)) END
    FROM listed AS l
    WHERE l.k <= c_listed
    UNION ALL
    SELECT NULL, l.problem, format('%s more entries with %s, not listed', l.n - c_listed,
                                   l.problem), NULL, NULL
    FROM listed AS l
    WHERE l.k = c_listed + 1
    ORDER BY 2, 4 NULLS LAST;

    -- A reversal: every entry and line against its original, mirrored by the
    -- batch's method (batch.range_reversal_line, what batch.process_reversal_range
    -- wrote the range from). This locates damage in the reversal and proves the
    -- mirror even where the seal holds.
    -- The mirror is not checked when the entries reversed are archived: the
    -- reversal's own seal (above) still is.
    IF v_run.kind IN ('REVERSAL', 'AUTO_REVERSAL') THEN
        IF NOT EXISTS (SELECT FROM batch.run AS o
                       JOIN gl.accounting_period AS ap ON ap.period = o.period
                       WHERE o.batch_id = v_run.reverses_batch_id AND ap.status = 'ARCHIVED')
        THEN
            RETURN QUERY
            SELECT * FROM audit.verify_reversal_mirror(p_batch_id);
        END IF;
        RETURN;
    END IF;

    IF cardinality(v_damaged) = 0 THEN
        RETURN;
    ELSIF cardinality(v_damaged) > c_examined THEN
        RETURN QUERY
        SELECT NULL::integer, 'RANGES_NOT_EXAMINED'::text,
               format('%s ranges differ from their seal; the first %s (ranges %s) are examined '
                      'entry by entry, ranges %s are not', cardinality(v_damaged), c_examined,
                      array_to_string(v_damaged[1:c_examined], ','),
                      array_to_string(v_damaged[c_examined + 1:], ',')),
               NULL::bigint, NULL::text;
        v_damaged := v_damaged[1:c_examined];
    END IF;


    -- 4. Locate the damage inside the ranges whose digest differs. Their rows
    --    are set beside the range rebuilt from its claims by
    --    batch.range_journal_line, the definition batch.process_range writes
    --    the range from, and grouped by entry and by line,
    --    so every comparison is an aggregate, never a join of two large sets.
    --    Structural checks need only the templates; a row-by-row comparison is
    --    only believed in a range whose rebuild hashes to the sealed digest,
    --    which makes the rebuild the sealed content itself.
    RETURN QUERY
    WITH dmg AS (
        SELECT rg.range_no, rg.claim_period, rg.source_type, rg.lo_source_id,
               rg.hi_source_id, v_run.je_id_base + rg.je_offset AS lo_je_id,
               v_run.je_id_base + rg.je_offset + rg.je_count - 1 AS hi_je_id,
               rg.claim_offset_base,
               (SELECT decode(x ->> 'digest', 'hex')
                  FROM jsonb_array_elements(coalesce(v_seal -> 'ranges', '[]'::jsonb)) AS x
                 WHERE (x ->> 'range_no')::integer = rg.range_no
                 LIMIT 1) AS sealed_digest
        FROM batch.range AS rg
        WHERE rg.batch_id = p_batch_id AND rg.range_no = ANY (v_damaged)
    ), base AS MATERIALIZED (
        SELECT d.range_no, e.*
        FROM dmg AS d
        CROSS JOIN LATERAL (
            -- OFFSET 0 keeps this a subquery of its own, so the range's bounds
            -- reach below the view's window as filters instead of becoming a
            -- join over every source row.
            -- A period-end's range from its items (batch.range_period_end_line,
            -- the same columns).
            SELECT l.source_type, l.source_id, l.txn_type, l.je_date AS txn_date,
                   l.source_date, l.currency,
                   l.source_amount AS amount, l.fx_rate, l.je_seq, l.line_no, l.account_code,
                   l.side, l.debit, l.credit, l.functional_debit, l.functional_credit,
                   l.description, l.template_lines, l.is_first_line, l.je_id,
                   gl.format_je_number(v_run.period, l.je_no) AS je_number
            FROM batch.range_journal_line(p_batch_id, v_run.period, d.claim_period,
                                          d.source_type, d.lo_source_id, d.hi_source_id,
                                          v_run.je_id_base + d.claim_offset_base,
                                          v_run.je_number_base + d.claim_offset_base,
                                          CASE WHEN d.claim_period <> v_run.period
                                               THEN batch.range_late_source_ids(
                                                        p_batch_id, d.claim_period,
                                                        d.source_type, d.lo_source_id,
                                                        d.hi_source_id) END) AS l
            WHERE v_run.kind <> 'PERIOD_END'
            UNION ALL
            SELECT l.source_type, l.source_id, l.txn_type, l.je_date, l.source_date,
                   l.currency, l.source_amount, l.fx_rate, l.je_seq, l.line_no,
                   l.account_code, l.side, l.debit, l.credit, l.functional_debit,
                   l.functional_credit, l.description, l.template_lines, l.is_first_line,
                   l.je_id, gl.format_je_number(v_run.period, l.je_no)
            FROM batch.range_period_end_line(p_batch_id, v_run.period, d.claim_period,
                                             d.source_type, d.lo_source_id, d.hi_source_id,
                                             v_run.je_id_base + d.claim_offset_base,
                                             v_run.je_number_base + d.claim_offset_base) AS l
            WHERE v_run.kind = 'PERIOD_END'
            OFFSET 0
        ) AS e
    ), side_by_side AS MATERIALIZED (
        -- src 'A': the ledger as it is; src 'E': the rebuilt range.
        SELECT d.range_no, 'A'::text AS src, h.je_id, 0 AS line_no, true AS is_header,
               h.je_number, h.je_date, h.period, h.source_type, h.source_id, h.je_seq,
               h.currency::text AS currency, h.fx_rate, h.description, h.source_amount,
               NULL::text AS account_code, NULL::text AS side, NULL::numeric AS debit,
               NULL::numeric AS credit, NULL::numeric AS functional_debit,
               NULL::numeric AS functional_credit, NULL::integer AS template_lines,
               NULL::text AS txn_type,
               audit.canonical_header_text(h.je_id, h.je_number, h.je_date, h.period,
                   h.batch_id, h.source_type, h.source_id, h.je_seq, h.currency, h.fx_rate,
                   h.description, h.source_amount, h.reverses_je_id, h.source_date)
                   AS canonical
        FROM dmg AS d
        JOIN gl.journal_entry_header AS h
          ON h.batch_id = p_batch_id AND h.je_id BETWEEN d.lo_je_id AND d.hi_je_id
        UNION ALL
        SELECT d.range_no, 'A', l.je_id, l.line_no, false, NULL, l.je_date, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, l.account_code,
               CASE WHEN l.debit > 0 OR l.functional_debit > 0 THEN 'D'
                    WHEN l.credit > 0 OR l.functional_credit > 0 THEN 'C' END,
               l.debit, l.credit, l.functional_debit, l.functional_credit, NULL, NULL,
               audit.canonical_line_text_by_version(
                   v_version, l.je_id, l.je_date, l.line_no, l.account_code, l.debit, l.credit,
                   l.functional_debit, l.functional_credit, l.batch_id)
        FROM dmg AS d
        JOIN gl.journal_entry_line AS l
          ON l.batch_id = p_batch_id AND l.je_id BETWEEN d.lo_je_id AND d.hi_je_id
        UNION ALL
        SELECT b.range_no, 'E', b.je_id, 0, true, b.je_number, b.txn_date, v_run.period,
               b.source_type, b.source_id, b.je_seq, b.currency::text, b.fx_rate,
               b.description, b.amount, NULL, NULL, NULL, NULL, NULL, NULL, b.template_lines,
               b.txn_type,
               audit.canonical_header_text(b.je_id, b.je_number, b.txn_date, v_run.period,
                   p_batch_id, b.source_type, b.source_id, b.je_seq, b.currency, b.fx_rate,
                   b.description, b.amount, NULL, b.source_date)
        FROM base AS b
        WHERE b.is_first_line
        UNION ALL
        SELECT b.range_no, 'E', b.je_id, b.line_no, false, b.je_number, b.txn_date, NULL,
               b.source_type, b.source_id, b.je_seq, NULL, NULL, NULL, NULL, b.account_code,
               b.side, b.debit, b.credit, b.functional_debit, b.functional_credit,
               b.template_lines, b.txn_type,
               audit.canonical_line_text_by_version(
                   v_version, b.je_id, b.txn_date, b.line_no, b.account_code, b.debit, b.credit,
                   b.functional_debit, b.functional_credit, p_batch_id)
        FROM base AS b
    ), rebuilt AS (
        SELECT d.range_no, d.sealed_digest,
               coalesce(x.digest, sha256(''::bytea)) AS digest,
               coalesce(x.digest, sha256(''::bytea)) = d.sealed_digest AS trusted
        FROM dmg AS d
        LEFT JOIN (
            SELECT e.range_no,
                   audit.range_root(v_version,
                       array_agg(e.entry_text ORDER BY e.je_id)
                           FILTER (WHERE v_version = 1),
                       array_agg(audit.entry_leaf_hash(e.entry_text) ORDER BY e.je_id)
                           FILTER (WHERE v_version = 2)) AS digest
            FROM (SELECT s.range_no, s.je_id,
                         string_agg(s.canonical, E'\n' ORDER BY s.line_no) AS entry_text
                  FROM side_by_side AS s
                  WHERE s.src = 'E'
                  GROUP BY s.range_no, s.je_id) AS e
            GROUP BY e.range_no
        ) AS x ON x.range_no = d.range_no
    ), entry AS (
        SELECT s.range_no, s.je_id,
               count(*) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_headers,
               count(*) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_headers,
               count(*) FILTER (WHERE s.src = 'A' AND NOT s.is_header) AS a_lines,
               sum(s.debit) FILTER (WHERE s.src = 'A') AS debit,
               sum(s.credit) FILTER (WHERE s.src = 'A') AS credit,
               sum(s.functional_debit) FILTER (WHERE s.src = 'A') AS functional_debit,
               sum(s.functional_credit) FILTER (WHERE s.src = 'A') AS functional_credit,
               string_agg(s.line_no::text, ',' ORDER BY s.line_no)
                   FILTER (WHERE s.src = 'A' AND NOT s.is_header) AS a_line_nos,
               string_agg(CASE WHEN s.is_header THEN 'header' ELSE 'line ' || s.line_no END
                          || ' dated ' || to_char(s.je_date, 'YYYY-MM-DD'), ', '
                          ORDER BY s.line_no)
                   FILTER (WHERE s.src = 'A' AND s.je_date NOT BETWEEN v_start AND v_end)
                   AS outside_dates,
               string_agg(CASE WHEN s.is_header THEN 'header' ELSE 'line ' || s.line_no END
                          || ' ' || to_char(s.je_date, 'YYYY-MM-DD'), ', ' ORDER BY s.line_no)
                   FILTER (WHERE s.src = 'A') AS a_dates,
               count(DISTINCT s.je_date) FILTER (WHERE s.src = 'A') AS a_date_count,
               max(s.template_lines) FILTER (WHERE s.src = 'E' AND s.is_header)
                   AS template_lines,
               min(s.txn_type) FILTER (WHERE s.src = 'E' AND s.is_header) AS txn_type,
               min(s.canonical) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_canonical,
               min(s.canonical) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_canonical,
               min(s.je_number) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_je_number,
               min(s.je_number) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_je_number,
               min(s.je_date) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_je_date,
               min(s.je_date) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_je_date,
               min(s.period) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_period,
               min(s.source_type) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_source_type,
               min(s.source_type) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_source_type,
               min(s.source_id) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_source_id,
               min(s.source_id) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_source_id,
               min(s.je_seq) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_je_seq,
               min(s.je_seq) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_je_seq,
               min(s.currency) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_currency,
               min(s.currency) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_currency,
               min(s.fx_rate::text) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_fx_rate,
               min(s.fx_rate::text) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_fx_rate,
               min(s.description) FILTER (WHERE s.src = 'A' AND s.is_header) AS a_description,
               min(s.description) FILTER (WHERE s.src = 'E' AND s.is_header) AS e_description,
               min(s.source_amount::text) FILTER (WHERE s.src = 'A' AND s.is_header)
                   AS a_source_amount,
               min(s.source_amount::text) FILTER (WHERE s.src = 'E' AND s.is_header)
                   AS e_source_amount
        FROM side_by_side AS s
        GROUP BY s.range_no, s.je_id
    ), line AS (
        SELECT s.range_no, s.je_id, s.line_no,
               count(*) FILTER (WHERE s.src = 'A') AS a_rows,
               count(*) FILTER (WHERE s.src = 'E') AS e_rows,
               min(s.je_number) FILTER (WHERE s.src = 'E') AS e_je_number,
               min(s.canonical) FILTER (WHERE s.src = 'A') AS a_canonical,
               min(s.canonical) FILTER (WHERE s.src = 'E') AS e_canonical,
               min(s.account_code) FILTER (WHERE s.src = 'A') AS a_account_code,
               min(s.account_code) FILTER (WHERE s.src = 'E') AS e_account_code,
               min(s.side) FILTER (WHERE s.src = 'A') AS a_side,
               min(s.side) FILTER (WHERE s.src = 'E') AS e_side,
               min(s.je_date) FILTER (WHERE s.src = 'A') AS a_je_date,
               min(s.je_date) FILTER (WHERE s.src = 'E') AS e_je_date,
               min(s.debit::text) FILTER (WHERE s.src = 'A') AS a_debit,
               min(s.debit::text) FILTER (WHERE s.src = 'E') AS e_debit,
               min(s.credit::text) FILTER (WHERE s.src = 'A') AS a_credit,
               min(s.credit::text) FILTER (WHERE s.src = 'E') AS e_credit,
               min(s.functional_debit::text) FILTER (WHERE s.src = 'A') AS a_functional_debit,
               min(s.functional_debit::text) FILTER (WHERE s.src = 'E') AS e_functional_debit,
               min(s.functional_credit::text) FILTER (WHERE s.src = 'A')
                   AS a_functional_credit,
               min(s.functional_credit::text) FILTER (WHERE s.src = 'E')
                   AS e_functional_credit
        FROM side_by_side AS s
        WHERE NOT s.is_header
        GROUP BY s.range_no, s.je_id, s.line_no
    ), entry_checked AS (
        SELECT e.*, r.trusted,
               gl.format_je_number(v_run.period,
                                   v_run.je_number_base + (e.je_id - v_run.je_id_base) + 1)
                   AS placed_je_number
        FROM entry AS e JOIN rebuilt AS r ON r.range_no = e.range_no
    ), line_checked AS (
        SELECT l.*, r.trusted FROM line AS l JOIN rebuilt AS r ON r.range_no = l.range_no
    ), found AS (
        SELECT e.range_no, 'DUPLICATE_JE_ID' AS problem, e.je_id, e.a_je_number AS je_number,
               format('je_id %s has %s headers in the ledger', e.je_id, e.a_headers) AS detail
        FROM entry_checked AS e
        WHERE e.a_headers > 1
        UNION ALL
        SELECT e.range_no, 'LINES_WITHOUT_HEADER', e.je_id,
               coalesce(e.e_je_number, e.placed_je_number),
               format('%s line(s) of je_id %s (line_no %s) have no header', e.a_lines, e.je_id,
                      e.a_line_nos)
        FROM entry_checked AS e
        WHERE e.a_headers = 0 AND e.a_lines > 0
        UNION ALL
        SELECT e.range_no, 'ENTRY_UNBALANCED', e.je_id,
               coalesce(e.a_je_number, e.e_je_number, e.placed_je_number),
               concat_ws('; ',
                   CASE WHEN e.debit <> e.credit
                        THEN format('debits %s, credits %s', e.debit, e.credit) END,
                   CASE WHEN e.functional_debit <> e.functional_credit
                        THEN format('functional debits %s, credits %s', e.functional_debit,
                                    e.functional_credit) END)
        FROM entry_checked AS e
        WHERE e.a_lines > 0
          AND (e.debit <> e.credit OR e.functional_debit <> e.functional_credit)
        UNION ALL
        SELECT e.range_no, 'LINE_COUNT_MISMATCH', e.je_id, e.a_je_number,
               format('%s line(s) (line_no %s), but its template (%s %s, entry %s) has %s',
                      e.a_lines, coalesce(e.a_line_nos, 'none'), e.e_source_type, e.txn_type,
                      e.e_je_seq, e.template_lines)
        FROM entry_checked AS e
        WHERE e.a_headers = 1 AND e.e_headers = 1 AND e.a_lines <> e.template_lines
        UNION ALL
        SELECT e.range_no, 'NUMBER_MISMATCH', e.je_id, e.a_je_number,
               format('je_id %s carries je_number %s; its place in the batch gives %s', e.je_id,
                      e.a_je_number, e.placed_je_number)
        FROM entry_checked AS e
        WHERE e.a_headers >= 1 AND e.a_je_number <> e.placed_je_number
        UNION ALL
        SELECT e.range_no, 'DATE_OUTSIDE_PERIOD', e.je_id,
               coalesce(e.a_je_number, e.e_je_number, e.placed_je_number),
               format('%s, outside period %s', e.outside_dates, v_run.period)
        FROM entry_checked AS e
        WHERE e.outside_dates IS NOT NULL
        UNION ALL
        SELECT e.range_no, 'LINE_DATE_MISMATCH', e.je_id,
               coalesce(e.a_je_number, e.e_je_number, e.placed_je_number),
               format('the rows of je_id %s are dated differently: %s', e.je_id, e.a_dates)
        FROM entry_checked AS e
        WHERE e.a_date_count > 1
        UNION ALL
        SELECT e.range_no, 'HEADER_MISSING', e.je_id, e.e_je_number,
               format('the sealed header of je_id %s (%s %s, entry %s) is not in the ledger',
                      e.je_id, e.e_source_type, e.e_source_id, e.e_je_seq)
        FROM entry_checked AS e
        WHERE e.trusted AND e.e_headers = 1 AND e.a_headers = 0
        UNION ALL
        SELECT e.range_no, 'HEADER_UNEXPECTED', e.je_id, e.a_je_number,
               format('header of je_id %s (%s %s, entry %s) was not sealed', e.je_id,
                      e.a_source_type, e.a_source_id, e.a_je_seq)
        FROM entry_checked AS e
        WHERE e.trusted AND e.a_headers > 0 AND e.e_headers = 0
        UNION ALL
        SELECT e.range_no, 'HEADER_DIFFERS', e.je_id, e.a_je_number,
               concat_ws('; ',
                   CASE WHEN e.a_je_number IS DISTINCT FROM e.e_je_number
                        THEN format('je_number %s, sealed %s', e.a_je_number,
                                    e.e_je_number) END,
                   CASE WHEN e.a_je_date IS DISTINCT FROM e.e_je_date
                        THEN format('je_date %s, sealed %s', to_char(e.a_je_date, 'YYYY-MM-DD'),
                                    to_char(e.e_je_date, 'YYYY-MM-DD')) END,
                   CASE WHEN e.a_period IS DISTINCT FROM v_run.period
                        THEN format('period %s, sealed %s', e.a_period, v_run.period) END,
                   CASE WHEN e.a_source_type IS DISTINCT FROM e.e_source_type
                          OR e.a_source_id IS DISTINCT FROM e.e_source_id
                          OR e.a_je_seq IS DISTINCT FROM e.e_je_seq
                        THEN format('source %s %s entry %s, sealed %s %s entry %s',
                                    e.a_source_type, e.a_source_id, e.a_je_seq,
                                    e.e_source_type, e.e_source_id, e.e_je_seq) END,
                   CASE WHEN e.a_currency IS DISTINCT FROM e.e_currency
                        THEN format('currency %s, sealed %s', e.a_currency, e.e_currency) END,
                   CASE WHEN e.a_fx_rate IS DISTINCT FROM e.e_fx_rate
                        THEN format('fx_rate %s, sealed %s', e.a_fx_rate, e.e_fx_rate) END,
                   CASE WHEN e.a_description IS DISTINCT FROM e.e_description
                        THEN format('description %L, sealed %L', e.a_description,
                                    e.e_description) END,
                   CASE WHEN e.a_source_amount IS DISTINCT FROM e.e_source_amount
                        THEN format('source_amount %s, sealed %s', e.a_source_amount,
                                    e.e_source_amount) END)
        FROM entry_checked AS e
        WHERE e.trusted AND e.a_headers = 1 AND e.e_headers = 1
          AND e.a_canonical <> e.e_canonical
        UNION ALL
        SELECT l.range_no, 'LINE_NOT_IN_TEMPLATE', l.je_id, l.e_je_number,
               format('line %s: account %s on side %s, its template says account %s on side %s',
                      l.line_no, l.a_account_code, coalesce(l.a_side, '-'), l.e_account_code,
                      l.e_side)
        FROM line_checked AS l
        WHERE l.a_rows >= 1 AND l.e_rows = 1
          AND (l.a_account_code <> l.e_account_code OR l.a_side <> l.e_side)
        UNION ALL
        SELECT l.range_no, 'LINE_MISSING', l.je_id, l.e_je_number,
               format('sealed line %s (account %s, %s) is not in the ledger', l.line_no,
                      l.e_account_code, CASE l.e_side WHEN 'D' THEN 'debit ' || l.e_debit
                                                      ELSE 'credit ' || l.e_credit END)
        FROM line_checked AS l
        WHERE l.trusted AND l.e_rows = 1 AND l.a_rows = 0
        UNION ALL
        SELECT l.range_no, 'LINE_UNEXPECTED', l.je_id,
               coalesce(l.e_je_number,
                        gl.format_je_number(v_run.period, v_run.je_number_base
                                                          + (l.je_id - v_run.je_id_base) + 1)),
               format('line %s (account %s) is in the ledger %s time(s), sealed %s time(s)',
                      l.line_no, l.a_account_code, l.a_rows, l.e_rows)
        FROM line_checked AS l
        WHERE l.trusted AND l.a_rows > l.e_rows
        UNION ALL
        SELECT l.range_no, 'LINE_DIFFERS', l.je_id, l.e_je_number,
               format('line %s: ', l.line_no) || concat_ws('; ',
                   CASE WHEN l.a_account_code IS DISTINCT FROM l.e_account_code
                        THEN format('account %s, sealed %s', l.a_account_code,
                                    l.e_account_code) END,
                   CASE WHEN l.a_je_date IS DISTINCT FROM l.e_je_date
                        THEN format('je_date %s, sealed %s', to_char(l.a_je_date, 'YYYY-MM-DD'),
                                    to_char(l.e_je_date, 'YYYY-MM-DD')) END,
                   CASE WHEN l.a_debit IS DISTINCT FROM l.e_debit
                        THEN format('debit %s, sealed %s', l.a_debit, l.e_debit) END,
                   CASE WHEN l.a_credit IS DISTINCT FROM l.e_credit
                        THEN format('credit %s, sealed %s', l.a_credit, l.e_credit) END,
                   CASE WHEN l.a_functional_debit IS DISTINCT FROM l.e_functional_debit
                        THEN format('functional_debit %s, sealed %s', l.a_functional_debit,
                                    l.e_functional_debit) END,
                   CASE WHEN l.a_functional_credit IS DISTINCT FROM l.e_functional_credit
                        THEN format('functional_credit %s, sealed %s', l.a_functional_credit,
                                    l.e_functional_credit) END)
        FROM line_checked AS l
        WHERE l.trusted AND l.a_rows = 1 AND l.e_rows = 1 AND l.a_canonical <> l.e_canonical
        UNION ALL
        SELECT r.range_no, 'RANGE_NOT_REBUILT', NULL::bigint, NULL::text,
               format('range %s rebuilt from its claims, source rows and reference data as '
                      'they are now hashes to %s, not to the sealed %s: some of those changed '
                      'since the commit, so its rows are not compared one by one', r.range_no,
                      encode(r.digest, 'hex'), encode(r.sealed_digest, 'hex'))
        FROM rebuilt AS r
        WHERE r.sealed_digest IS NOT NULL AND NOT r.trusted
    ), listed AS (
        SELECT f.*,
               row_number() OVER (PARTITION BY f.range_no, f.problem
                                  ORDER BY f.je_id NULLS FIRST, f.detail) AS k,
               count(*) OVER (PARTITION BY f.range_no, f.problem) AS n
        FROM found AS f
    )
    SELECT l.range_no, l.problem, l.detail, l.je_id, l.je_number
    FROM listed AS l
    WHERE l.k <= c_listed
    UNION ALL
    SELECT l.range_no, l.problem,
           format('range %s: %s more entries with %s, not listed', l.range_no, l.n - c_listed,
                  l.problem), NULL, NULL
    FROM listed AS l
    WHERE l.k = c_listed + 1
    ORDER BY 1, 4 NULLS LAST, 2, 3;
END
$$;

GRANT EXECUTE ON FUNCTION audit.verify_batch(bigint) TO monthend_runner, monthend_auditor;
