-- Phases 4 and 5 for one range of a reversal (batch.process_range hands it
-- here, having checked the claim). In one set-based statement it writes the
-- range's reversing headers and lines into the batch's staging tables (the
-- lines of batch.range_reversal_line: each original line mirrored by the
-- batch's method), records per-currency totals and the range's seal
-- (audit.range_root; the canonical text includes the entry each header
-- reverses), then validates as
-- every range does (batch.complete_range), and also that every entry of the
-- range's postings is mirrored by exactly one reversing entry with all its
-- lines (counted from the reversed batch's ledger, independently of the
-- statement).
CREATE OR REPLACE PROCEDURE batch.process_reversal_range(p_range_id bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- The statement reads bounded spans of two ledger partitions and the range's
-- rows of batch.source_reversal: hash joins over those spans, never a probe
-- per line; the joins run in the order written (postings, headers, lines).
SET enable_nestloop = off
SET enable_mergejoin = off
SET join_collapse_limit = 1
SET from_collapse_limit = 1
SET jit = off
AS $$
DECLARE
    v_range          batch.range%ROWTYPE;
    v_run            batch.run%ROWTYPE;
    v_headers        bigint;
    v_lines          bigint;
    v_unbalanced     bigint;
    v_sources        bigint;
    v_source_amount  numeric;
    v_min_no         bigint;
    v_max_no         bigint;
    v_distinct_no    bigint;
    v_mirrored       bigint;
    v_digest         bytea;
    v_src_rows       bigint;
    v_src_amount     numeric;
    v_entries        bigint;
    v_original_lines bigint;
    v_lo_je_id       bigint;
    v_hi_je_id       bigint;
    v_failures       text[] := '{}'::text[];
BEGIN
    SELECT * INTO STRICT v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id;
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = v_range.batch_id;

    EXECUTE format($q$
        WITH line AS MATERIALIZED (
            SELECT l.source_id, l.je_date, l.currency, l.source_amount, l.fx_rate, l.je_seq,
                   l.je_index, l.line_no, l.account_code, l.debit, l.credit,
                   l.functional_debit, l.functional_credit, l.description, l.is_first_line,
                   l.je_id, l.je_no, l.reverses_je_id
            FROM batch.range_reversal_line($7, $3, $4, $5, $6, $1, $2) AS l
        ), header AS (
            INSERT INTO batch.%1$I (je_id, je_number, je_date, period, batch_id, source_type,
                                    source_id, je_seq, currency, fx_rate, description,
                                    source_amount, reverses_je_id)
            SELECT l.je_id, gl.format_je_number($3, l.je_no), l.je_date, $3, $7,
                   $4, l.source_id, l.je_seq, l.currency, l.fx_rate, l.description,
                   l.source_amount, l.reverses_je_id
            FROM line AS l
            WHERE l.is_first_line
            RETURNING je_id, source_amount, je_seq, je_number, reverses_je_id,
                      audit.canonical_header_text(je_id, je_number, je_date, period, batch_id,
                          source_type, source_id, je_seq, currency, fx_rate, description,
                          source_amount, reverses_je_id) AS canonical
        ), detail AS (
            INSERT INTO batch.%2$I (je_id, je_date, line_no, account_code, debit, credit,
                                    functional_debit, functional_credit, batch_id)
            SELECT l.je_id, l.je_date, l.line_no, l.account_code, l.debit, l.credit,
                   l.functional_debit, l.functional_credit, $7
            FROM line AS l
            RETURNING je_id, line_no, debit, credit, functional_debit, functional_credit,
                      audit.canonical_line_text_by_version(
                          $9, je_id, je_date, line_no, account_code, debit, credit,
                          functional_debit, functional_credit, batch_id) AS canonical
        ), totals AS (
            INSERT INTO batch.range_total (range_id, currency, source_rows, source_amount,
                                           debit, credit, functional_debit, functional_credit)
            SELECT $8, l.currency,
                   count(*) FILTER (WHERE l.is_first_line AND l.je_index = 0),
                   coalesce(sum(l.source_amount) FILTER (WHERE l.is_first_line
                                                         AND l.je_index = 0), 0),
                   sum(l.debit), sum(l.credit), sum(l.functional_debit),
                   sum(l.functional_credit)
            FROM line AS l
            GROUP BY l.currency
            RETURNING source_rows, source_amount
        ), header_summary AS (
            SELECT count(*) AS headers, count(DISTINCT h.je_id) AS distinct_ids,
                   count(DISTINCT h.reverses_je_id) AS mirrored,
                   min(h.je_id) AS lo_je_id, max(h.je_id) AS hi_je_id
            FROM header AS h
        ), entry_summary AS (
            -- One pass over the range's rows in entry order (one sort): each
            -- entry's balance in both currencies, and its text for the seal
            -- (its header, then its lines in line_no order; a window joins
            -- them in the window's order), by the batch's seal version.
            SELECT count(*) FILTER (WHERE e.balance <> 0 OR e.functional_balance <> 0)
                       AS unbalanced,
                   audit.range_root($9,
                       array_agg(e.entry_text ORDER BY e.je_id) FILTER (WHERE $9 = 1),
                       array_agg(audit.entry_leaf_hash(e.entry_text) ORDER BY e.je_id)
                           FILTER (WHERE $9 = 2)) AS seal
            FROM (SELECT x.je_id, x.line_no,
                         string_agg(x.canonical, E'\n') OVER entry AS entry_text,
                         -- One difference per currency rather than two sums
                         -- each: half the numeric aggregation over every line.
                         sum(x.debit - x.credit) OVER entry AS balance,
                         sum(x.functional_debit - x.functional_credit) OVER entry
                             AS functional_balance
                  FROM (SELECT h.je_id, 0 AS line_no, h.canonical, 0::numeric AS debit,
                               0::numeric AS credit, 0::numeric AS functional_debit,
                               0::numeric AS functional_credit
                        FROM header AS h
                        UNION ALL
                        SELECT d.je_id, d.line_no, d.canonical, d.debit, d.credit,
                               d.functional_debit, d.functional_credit
                        FROM detail AS d) AS x
                  WINDOW entry AS (PARTITION BY x.je_id ORDER BY x.line_no
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
                 ) AS e
            WHERE e.line_no = 0
        )
        SELECT hs.headers,
               (SELECT count(*) FROM detail),
               es.unbalanced,
               (SELECT coalesce(sum(t.source_rows), 0) FROM totals AS t),
               (SELECT coalesce(sum(t.source_amount), 0) FROM totals AS t),
               hs.lo_je_id - $1 + $2 + 1,
               hs.hi_je_id - $1 + $2 + 1,
               hs.distinct_ids,
               hs.mirrored,
               es.seal
        FROM header_summary AS hs, entry_summary AS es
        $q$,
        'stage_journal_entry_header_' || v_run.batch_id,
        'stage_journal_entry_line_' || v_run.batch_id)
    INTO v_headers, v_lines, v_unbalanced, v_sources, v_source_amount, v_min_no, v_max_no,
         v_distinct_no, v_mirrored, v_digest
    USING v_run.je_id_base, v_run.je_number_base, v_run.period, v_range.source_type,
          v_range.lo_source_id, v_range.hi_source_id, v_run.batch_id, p_range_id,
          v_run.seal_version;

    -- Independently of the statement: the source rows and their amounts, and
    -- the entries and lines the range's postings have in the reversed batch.
    SELECT count(*), coalesce(sum(s.amount), 0), coalesce(sum(r.je_count), 0),
           min(r.original_je_id), max(r.original_je_id + r.je_count - 1)
      INTO v_src_rows, v_src_amount, v_entries, v_lo_je_id, v_hi_je_id
      FROM batch.source_reversal AS r
      JOIN batch.entry_source AS s
        ON s.source_type = r.source_type AND s.source_id = r.source_id
     WHERE r.batch_id = v_run.batch_id AND r.source_type = v_range.source_type
       AND r.source_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
       AND s.source_type = v_range.source_type
       AND s.source_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id;
    SELECT count(*) INTO v_original_lines
      FROM gl.journal_entry_line AS l
     WHERE l.batch_id = v_run.reverses_batch_id
       AND l.je_id BETWEEN v_lo_je_id AND v_hi_je_id
       AND l.je_id IN (SELECT r.original_je_id + k.k
                       FROM batch.source_reversal AS r
                       CROSS JOIN LATERAL generate_series(0, r.je_count - 1) AS k (k)
                       WHERE r.batch_id = v_run.batch_id AND r.source_type = v_range.source_type
                         AND r.source_id BETWEEN v_range.lo_source_id
                                             AND v_range.hi_source_id);

    IF NOT batch.record_check(v_run.batch_id, p_range_id, 'range', 'entries_mirror_originals',
                              v_mirrored = v_entries AND v_headers = v_entries
                              AND v_lines = v_original_lines,
                              format('%s entries, %s lines', v_entries, v_original_lines),
                              format('%s entries reversing %s, %s lines', v_headers, v_mirrored,
                                     v_lines)) THEN
        v_failures := v_failures || format('%s reversing entries for %s original entries, '
                                           '%s lines for %s', v_headers, v_entries, v_lines,
                                           v_original_lines);
    END IF;
    CALL batch.complete_range(p_range_id, v_headers, v_lines, v_unbalanced, v_sources,
                              v_source_amount, v_min_no, v_max_no, v_distinct_no, v_digest,
                              v_src_rows, v_src_amount, v_failures);
END
$$;
