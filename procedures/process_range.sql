-- Phases 4 and 5 for one range. Takes a range this connection claimed
-- (batch.claim_range). In one set-based statement it generates the range's
-- journal-entry headers and lines into the batch's staging tables (the lines
-- of batch.range_journal_line, amounts by the rounding rule), records
-- per-currency totals and the range's seal (audit.range_root over the
-- canonical text of exactly the rows inserted, by the batch's seal version),
-- then validates the range: every entry balances in both currencies, counts
-- and the source control total match the claimed rows, and the numbers are
-- exactly the range's block (batch.complete_range). A failed
-- check raises, so the range's output and its DONE mark commit together or not
-- at all. Returns quietly if the range is already DONE (an orphaned attempt
-- finished it). A reversal's range is handed to batch.process_reversal_range,
-- a range still in stage PREFLIGHT to batch.preflight_range. A period-end's
-- range is written the same way from its items (batch.range_period_end_line
-- instead of batch.range_journal_line).
CREATE OR REPLACE PROCEDURE batch.process_range(p_range_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- A range is ~10k source rows fanned out to ~90k lines, joined to a dozen
-- reference rows and to the range's claims. The planner cannot see through
-- the rounding view's window how many lines come out, estimates a few dozen,
-- and probes an index once per line (claims, currency, FX: 3x slower
-- measured). Hash joins are right at every size a range has; merge joins
-- would sort ~90k lines twice more (~8% of the range measured).
SET enable_nestloop = off
SET enable_mergejoin = off
-- Joins run in the order written, so the rounding view looks up currency and
-- FX rate once per source row, before fanning out to lines (the planner,
-- misjudging the fan-out, did it once per line: 9% of a range measured).
SET join_collapse_limit = 1
SET from_collapse_limit = 1
-- Compiling the statement costs more than running it on a range (1.5 s of
-- JIT against ~0.5 s of work measured), and the disabled nested loops inflate
-- the cost estimates past jit_above_cost.
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
    v_digest         bytea;
    v_src_rows       bigint;
    v_src_amount     numeric;
    v_late_ids       bigint[];
BEGIN
    -- KEY SHARE on the batch, taken before the range's row as cancel and
    -- discard take them (the batch FOR UPDATE, then its ranges): they wait
    -- for a range under way and then release what it wrote with the rest,
    -- where otherwise its claims could commit after the release and outlive
    -- the batch.
    PERFORM FROM batch.run AS r
      WHERE r.batch_id = (SELECT rg.batch_id FROM batch.range AS rg
                          WHERE rg.range_id = p_range_id)
      FOR KEY SHARE;
    SELECT * INTO v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'range % does not exist', p_range_id USING ERRCODE = 'no_data_found';
    ELSIF v_range.status = 'DONE' THEN
        RETURN;
    END IF;
    IF v_range.status <> 'RUNNING' OR NOT batch.range_claim_held(p_range_id, pg_backend_pid()) THEN
        RAISE EXCEPTION 'range % is % and claimed by backend %; claim it with batch.claim_range first',
                        p_range_id, v_range.status, v_range.worker_pid
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_range.stage = 'PREFLIGHT' THEN
        CALL batch.preflight_range(p_range_id);
        RETURN;
    END IF;
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = v_range.batch_id;
    IF v_run.status <> 'ALLOCATED' THEN
        RAISE EXCEPTION 'batch % is %; ranges are processed while it is ALLOCATED',
                        v_run.batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF v_run.kind IN ('REVERSAL', 'AUTO_REVERSAL') THEN
        CALL batch.process_reversal_range(p_range_id);
        RETURN;
    END IF;
    IF v_range.claim_period <> v_run.period THEN
        v_late_ids := batch.range_late_source_ids(v_run.batch_id, v_range.claim_period,
                                                  v_range.source_type, v_range.lo_source_id,
                                                  v_range.hi_source_id);
    END IF;

    EXECUTE format($q$
        WITH line AS MATERIALIZED (
            SELECT l.source_id, l.je_date, l.source_date, l.currency, l.source_amount,
                   l.fx_rate, l.je_seq, l.je_index, l.line_no, l.account_code, l.debit,
                   l.credit, l.functional_debit, l.functional_credit, l.description,
                   l.is_first_line, l.je_id, l.je_no
            FROM batch.%3$I($7, $3, $9, $4, $5, $6, $1, $2, $10) AS l
        ), header AS (
            INSERT INTO batch.%1$I (je_id, je_number, je_date, period, batch_id, source_type,
                                    source_id, je_seq, currency, fx_rate, description,
                                    source_amount, source_date)
            SELECT l.je_id, gl.format_je_number($3, l.je_no), l.je_date, $3, $7,
                   $4, l.source_id, l.je_seq, l.currency, l.fx_rate, l.description,
                   l.source_amount, l.source_date
            FROM line AS l
            WHERE l.is_first_line
            RETURNING je_id, source_amount, je_seq, je_number,
                      audit.canonical_header_text(je_id, je_number, je_date, period, batch_id,
                          source_type, source_id, je_seq, currency, fx_rate, description,
                          source_amount, reverses_je_id, source_date) AS canonical
        ), detail AS (
            INSERT INTO batch.%2$I (je_id, je_date, line_no, account_code, debit, credit,
                                    functional_debit, functional_credit, batch_id)
            SELECT l.je_id, l.je_date, l.line_no, l.account_code, l.debit, l.credit,
                   l.functional_debit, l.functional_credit, $7
            FROM line AS l
            RETURNING je_id, line_no, debit, credit, functional_debit, functional_credit,
                      audit.canonical_line_text_by_version(
                          $11, je_id, je_date, line_no, account_code, debit, credit,
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
            -- One pass over the inserted headers; the numbers are the je_ids
            -- shifted by one constant, so the je_id bounds and distinct count
            -- prove the numbers fill the block.
            SELECT count(*) AS headers, count(DISTINCT h.je_id) AS distinct_ids,
                   min(h.je_id) AS lo_je_id, max(h.je_id) AS hi_je_id
            FROM header AS h
        ), entry_summary AS (
            -- One pass over the range's rows in entry order (one sort): each
            -- entry's balance in both currencies, and its text for the seal
            -- (its header, then its lines in line_no order; a window joins
            -- them in the window's order), by the batch's seal version.
            SELECT count(*) FILTER (WHERE e.balance <> 0 OR e.functional_balance <> 0)
                       AS unbalanced,
                   audit.range_root($11,
                       array_agg(e.entry_text ORDER BY e.je_id) FILTER (WHERE $11 = 1),
                       array_agg(audit.entry_leaf_hash(e.entry_text) ORDER BY e.je_id)
                           FILTER (WHERE $11 = 2)) AS seal
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
               es.seal
        FROM header_summary AS hs, entry_summary AS es
        $q$,
        'stage_journal_entry_header_' || v_run.batch_id,
        'stage_journal_entry_line_' || v_run.batch_id,
        CASE v_run.kind WHEN 'PERIOD_END' THEN 'range_period_end_line'
                        ELSE 'range_journal_line' END)
    INTO v_headers, v_lines, v_unbalanced, v_sources, v_source_amount, v_min_no, v_max_no,
         v_distinct_no, v_digest
    -- The range's claims count their offsets from claim_offset_base.
    USING v_run.je_id_base + v_range.claim_offset_base,
          v_run.je_number_base + v_range.claim_offset_base, v_run.period, v_range.source_type,
          v_range.lo_source_id, v_range.hi_source_id, v_run.batch_id, p_range_id,
          v_range.claim_period, v_late_ids, v_run.seal_version;

    -- Control total read straight from the source table (a period-end's:
    -- its items), independently of the generation above.
    SELECT count(*), coalesce(sum(s.amount), 0) INTO v_src_rows, v_src_amount
      FROM batch.source_claim AS c
      JOIN batch.entry_source AS s
        ON s.source_type = c.source_type AND s.source_id = c.source_id
     WHERE c.period = v_range.claim_period AND c.source_type = v_range.source_type
       AND c.batch_id = v_run.batch_id
       AND c.source_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
       AND s.source_type = v_range.source_type
       AND s.source_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
       AND (v_late_ids IS NULL OR s.source_id = ANY (v_late_ids));

    CALL batch.complete_range(p_range_id, v_headers, v_lines, v_unbalanced, v_sources,
                              v_source_amount, v_min_no, v_max_no, v_distinct_no, v_digest,
                              v_src_rows, v_src_amount, '{}');
END
$$;

GRANT EXECUTE ON PROCEDURE batch.process_range(bigint) TO monthend_runner;
