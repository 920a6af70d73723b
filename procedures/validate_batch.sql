-- Phase 6, pre-commit validation. Takes an ALLOCATED batch whose ranges are all
-- DONE and whose staging tables the workers have indexed, analyzed and counted
-- (batch.run_validation_piece: ATTACH at commit then finds the indexes and
-- builds nothing). Checks, writing one validation_result row each:
--   ranges_done            every range DONE
--   reconciliation_count   posted + dead-lettered = source rows, per type and currency
--   reconciliation_amount  the same in amount
--   debits_equal_credits   per transaction currency, and in functional currency
--   numbering_gapless      the ranges' blocks tile 1..N exactly
--   claims_posted_once     every claim of the batch posted exactly once
--   staging_header_rows,   each staging table holds what the ranges recorded:
--   staging_line_rows      its count pieces (batch.run_validation_piece) cover
--                          its blocks and add up to it
--   staging_row_counts     both do
--   claims_counted         a run's claims, counted in its claims partitions by
--                          its claim pieces, are the rows its ranges claimed
-- All pass: the batch is VALIDATED, or, a draft, DRAFT (its digest recorded
-- and DRAFT_BUILT entered in the audit chain). Any fails: it is FAILED,
-- nothing is published.
CREATE OR REPLACE PROCEDURE batch.validate_batch(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started     timestamptz := clock_timestamp();
    v_run         batch.run%ROWTYPE;
    v_not_done    bigint;
    v_mismatch    text;
    v_amount_diff text;
    v_unbalanced  text;
    v_tiling      text;
    v_posted      bigint;
    v_exp_lines   bigint;
    v_unprepared  bigint;
    v_stage_counts text;
    v_stage       record;
    v_stage_ok    boolean;
    v_claims_counted bigint;
    v_claim_pieces   bigint;
    v_claims_tiled   boolean;
    v_failures    text[] := '{}'::text[];
    v_header_tbl  text := 'stage_journal_entry_header_' || p_batch_id;
    v_line_tbl    text := 'stage_journal_entry_line_' || p_batch_id;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status <> 'ALLOCATED' THEN
        RAISE EXCEPTION 'batch % is %; pre-commit validation runs on an ALLOCATED batch',
                        p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    SELECT count(*) INTO v_not_done
      FROM batch.range AS rg WHERE rg.batch_id = p_batch_id AND rg.status <> 'DONE';
    IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'ranges_done', v_not_done = 0,
                              '0 ranges not done', v_not_done || ' ranges not done') THEN
        RAISE EXCEPTION 'batch % has % ranges not DONE', p_batch_id, v_not_done
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Process them with "monthend resume %s".', p_batch_id);
    END IF;

    -- Posted (per range totals, taken from the generated entries) plus
    -- dead-lettered must equal the control totals taken at pre-flight.
    WITH posted AS (
        SELECT rg.source_type, rt.currency::text AS currency,
               sum(rt.source_rows) AS n, sum(rt.source_amount) AS amount
        FROM batch.range AS rg JOIN batch.range_total AS rt ON rt.range_id = rg.range_id
        WHERE rg.batch_id = p_batch_id
        GROUP BY rg.source_type, rt.currency
    ), dead AS (
        SELECT d.source_type, coalesce(d.currency, '') AS currency,
               count(*) AS n, coalesce(sum(d.amount), 0) AS amount
        FROM batch.dead_letter AS d WHERE d.batch_id = p_batch_id
        GROUP BY d.source_type, coalesce(d.currency, '')
    ), outcome AS (
        SELECT coalesce(p.source_type, d.source_type) AS source_type,
               coalesce(p.currency, d.currency) AS currency,
               coalesce(p.n, 0) + coalesce(d.n, 0) AS n,
               coalesce(p.amount, 0) + coalesce(d.amount, 0) AS amount
        FROM posted AS p FULL JOIN dead AS d
          ON d.source_type = p.source_type AND d.currency = p.currency
    ), compared AS (
        SELECT coalesce(c.source_type, o.source_type) AS source_type,
               coalesce(c.currency, o.currency) AS currency,
               coalesce(c.source_rows, 0) AS expected_n, coalesce(o.n, 0) AS actual_n,
               coalesce(c.source_amount, 0) AS expected_amount,
               coalesce(o.amount, 0) AS actual_amount
        FROM (SELECT * FROM batch.control_total AS ct WHERE ct.batch_id = p_batch_id) AS c
        FULL JOIN outcome AS o ON o.source_type = c.source_type AND o.currency = c.currency
    )
    SELECT string_agg(format('%s %s: %s source rows, %s posted+dead-lettered', x.source_type,
                             nullif(x.currency, ''), x.expected_n, x.actual_n), '; ')
               FILTER (WHERE x.expected_n <> x.actual_n),
           string_agg(format('%s %s: source %s, posted+dead-lettered %s', x.source_type,
                             nullif(x.currency, ''), x.expected_amount, x.actual_amount), '; ')
               FILTER (WHERE x.expected_amount <> x.actual_amount)
      INTO v_mismatch, v_amount_diff
      FROM compared AS x;
    IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'reconciliation_count',
                              v_mismatch IS NULL, 'posted + dead-lettered = source rows',
                              coalesce(v_mismatch, 'equal for every source type and currency')) THEN
        v_failures := v_failures || ('count: ' || v_mismatch);
    END IF;
    IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'reconciliation_amount',
                              v_amount_diff IS NULL, 'posted + dead-lettered = source amount',
                              coalesce(v_amount_diff, 'equal for every source type and currency')) THEN
        v_failures := v_failures || ('amount: ' || v_amount_diff);
    END IF;

    SELECT string_agg(x.problem, '; ') INTO v_unbalanced
      FROM (
        SELECT format('%s debits %s, credits %s', rt.currency, sum(rt.debit), sum(rt.credit))
                   AS problem
        FROM batch.range AS rg JOIN batch.range_total AS rt ON rt.range_id = rg.range_id
        WHERE rg.batch_id = p_batch_id
        GROUP BY rt.currency HAVING sum(rt.debit) <> sum(rt.credit)
        UNION ALL
        SELECT format('functional debits %s, credits %s', sum(rt.functional_debit),
                      sum(rt.functional_credit))
        FROM batch.range AS rg JOIN batch.range_total AS rt ON rt.range_id = rg.range_id
        WHERE rg.batch_id = p_batch_id
        HAVING sum(rt.functional_debit) <> sum(rt.functional_credit)
      ) AS x;
    IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'debits_equal_credits',
                              v_unbalanced IS NULL, 'debits = credits per currency',
                              coalesce(v_unbalanced, 'balanced')) THEN
        v_failures := v_failures || ('balance: ' || v_unbalanced);
    END IF;

    -- Each range proved its numbers are exactly its block; blocks must tile
    -- 0..je_count-1 with no gap and no overlap.
    SELECT string_agg(format('range %s starts at offset %s, expected %s', t.range_no,
                             t.je_offset, t.expected), '; ')
      INTO v_tiling
      FROM (SELECT rg.range_no, rg.je_offset,
                   coalesce(sum(rg.je_count) OVER (ORDER BY rg.range_no
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS expected
            FROM batch.range AS rg WHERE rg.batch_id = p_batch_id) AS t
     WHERE t.je_offset <> t.expected;
    IF v_tiling IS NULL AND (SELECT coalesce(sum(rg.je_count), 0) FROM batch.range AS rg
                             WHERE rg.batch_id = p_batch_id) <> v_run.je_count THEN
        v_tiling := 'ranges hold a different number of entries than allocated';
    END IF;
    IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'numbering_gapless',
                              v_tiling IS NULL,
                              format('%s..%s', v_run.je_number_base + 1,
                                     v_run.je_number_base + v_run.je_count),
                              coalesce(v_tiling, 'gapless')) THEN
        v_failures := v_failures || ('numbering: ' || v_tiling);
    END IF;

    SELECT coalesce(sum(rt.source_rows), 0) INTO v_posted
      FROM batch.range AS rg JOIN batch.range_total AS rt ON rt.range_id = rg.range_id
     WHERE rg.batch_id = p_batch_id;
    IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'claims_posted_once',
                              v_posted = v_run.claimed_rows,
                              v_run.claimed_rows || ' claimed rows', v_posted || ' posted') THEN
        v_failures := v_failures || format('%s rows claimed, %s posted', v_run.claimed_rows,
                                           v_posted);
    END IF;

    -- The staging tables' pieces (batch.run_validation_piece, run by the
    -- workers side by side): all done, each table's count pieces covering
    -- its blocks one after another from the first to the last, and adding up
    -- to what the ranges recorded.
    SELECT coalesce(sum(rg.line_count), 0) INTO v_exp_lines
      FROM batch.range AS rg WHERE rg.batch_id = p_batch_id;
    -- Unprepared: a piece not done, or no plan though a staging table exists.
    SELECT CASE WHEN count(*) = 0 THEN (to_regclass(format('batch.%I', v_header_tbl)) IS NOT NULL
                                        OR to_regclass(format('batch.%I', v_line_tbl)) IS NOT NULL)::int
                ELSE count(*) FILTER (WHERE sp.finished_at IS NULL) END
      INTO v_unprepared
      FROM batch.validation_piece AS sp WHERE sp.batch_id = p_batch_id;
    IF v_unprepared > 0 OR (v_run.je_count > 0 AND
            (to_regclass(format('batch.%I', v_header_tbl || '_pkey')) IS NULL
             OR to_regclass(format('batch.%I', v_line_tbl || '_je_id_brin')) IS NULL)) THEN
        RAISE EXCEPTION 'batch %: its staging tables are not prepared', p_batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('"monthend resume %s" prepares them (batch.plan_validation_pieces, '
                                'then batch.run_validation_piece for each piece).', p_batch_id);
    END IF;
    FOR v_stage IN
        SELECT t.stage_table, t.expected, coalesce(c.counted, 0) AS counted,
               coalesce(c.pieces, 0) AS pieces, coalesce(c.covered, 0) AS covered,
               coalesce(c.tiled, true) AS tiled,
               CASE WHEN to_regclass(format('batch.%I', t.relname)) IS NULL THEN 0
                    ELSE pg_relation_size(format('batch.%I', t.relname)::regclass)
                         / current_setting('block_size')::bigint END AS blocks
        FROM (VALUES ('header', v_run.je_count::bigint, v_header_tbl),
                     ('line', v_exp_lines, v_line_tbl)) AS t (stage_table, expected, relname)
        LEFT JOIN LATERAL (
            SELECT sum(x.row_count) AS counted, count(*) AS pieces,
                   max(x.end_block) AS covered,
                   bool_and(x.first_block = x.previous_end) AS tiled
            FROM (SELECT sp.row_count, sp.first_block, sp.end_block,
                         coalesce(lag(sp.end_block) OVER (ORDER BY sp.first_block), 0)
                             AS previous_end
                  FROM batch.validation_piece AS sp
                  WHERE sp.batch_id = p_batch_id AND sp.stage_table = t.stage_table
                    AND sp.task = 'count') AS x) AS c ON true
    LOOP
        v_stage_ok := v_stage.tiled AND v_stage.covered = v_stage.blocks
                      AND v_stage.counted = v_stage.expected;
        IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit',
                                  'staging_' || v_stage.stage_table || '_rows', v_stage_ok,
                                  format('%s %ss', v_stage.expected, v_stage.stage_table),
                                  format('%s %ss counted in %s pieces', v_stage.counted,
                                         v_stage.stage_table, v_stage.pieces)
                                  || CASE WHEN v_stage.tiled AND v_stage.covered = v_stage.blocks
                                          THEN ''
                                          ELSE format(', which do not cover its %s blocks '
                                                      'one after another', v_stage.blocks)
                                     END) THEN
            v_stage_counts := concat_ws(', ', v_stage_counts,
                                        format('%s %ss', v_stage.counted, v_stage.stage_table));
        END IF;
    END LOOP;
    IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'staging_row_counts',
                              v_stage_counts IS NULL,
                              format('%s headers, %s lines', v_run.je_count, v_exp_lines),
                              coalesce('staging holds ' || v_stage_counts,
                                       format('%s headers, %s lines', v_run.je_count,
                                              v_exp_lines))) THEN
        v_failures := v_failures || ('staging holds ' || v_stage_counts);
    END IF;

    -- A run's claims, counted by its claim pieces: the rows its ranges
    -- claimed, no more and no fewer, each claims partition's pieces covering
    -- it one after another from its first block to the end it had when
    -- planned (the batch's claims were all written by then).
    IF v_run.kind = 'RUN' THEN
        SELECT coalesce(sum(x.row_count), 0), count(*),
               coalesce(bool_and(x.first_block = x.previous_end), true)
          INTO v_claims_counted, v_claim_pieces, v_claims_tiled
          FROM (SELECT sp.row_count, sp.first_block,
                       coalesce(lag(sp.end_block) OVER (PARTITION BY sp.claim_period
                                                        ORDER BY sp.first_block), 0)
                           AS previous_end
                FROM batch.validation_piece AS sp
                WHERE sp.batch_id = p_batch_id AND sp.stage_table = 'claim') AS x;
        IF NOT batch.record_check(p_batch_id, NULL, 'pre-commit', 'claims_counted',
                                  v_claims_tiled AND v_claims_counted = v_run.claimed_rows,
                                  format('%s claims', v_run.claimed_rows),
                                  format('%s claims counted in %s pieces', v_claims_counted,
                                         v_claim_pieces)
                                  || CASE WHEN v_claims_tiled THEN ''
                                          ELSE ', which do not cover their partitions one '
                                               'block range after another' END) THEN
            v_failures := v_failures || format('%s claims counted, %s claimed',
                                               v_claims_counted, v_run.claimed_rows);
        END IF;
    END IF;

    IF cardinality(v_failures) > 0 THEN
        PERFORM batch.record_phase_time(p_batch_id, 'validation', v_started);
        UPDATE batch.run
           SET status = 'FAILED', failed_status = 'ALLOCATED', finished_at = clock_timestamp(),
               error = 'pre-commit validation failed: ' || array_to_string(v_failures, '; ')
         WHERE batch_id = p_batch_id;
        PERFORM batch.log_event(p_batch_id, 'VALIDATION_FAILED',
                                array_to_string(v_failures, '; '), '{}', 'ERROR');
        PERFORM audit.append('VALIDATION_FAILURE', jsonb_build_object(
            'batch_id', p_batch_id, 'failures', to_jsonb(v_failures)));
        RAISE WARNING 'batch % failed pre-commit validation: %', p_batch_id,
                      array_to_string(v_failures, '; ');
        RETURN;
    END IF;

    -- A draft stops here, validated, outside the ledger: its digest is the one
    -- its commit will seal.
    UPDATE batch.run AS r
       SET status = CASE r.mode WHEN 'DRAFT' THEN 'DRAFT' ELSE 'VALIDATED' END,
           digest = CASE r.mode WHEN 'DRAFT' THEN (SELECT d.digest
                                                   FROM batch.batch_digest(p_batch_id) AS d)
                    END,
           line_count = v_exp_lines,
           phase_seconds = r.phase_seconds || jsonb_build_object('processing',
               (SELECT round(coalesce(extract(epoch FROM max(rg.finished_at) - min(rg.started_at)),
                                      0)::numeric, 3)
                  FROM batch.range AS rg WHERE rg.batch_id = p_batch_id),
               -- The pieces, first started to last finished, on the workers.
               'validation_pieces',
               (SELECT round(coalesce(extract(epoch FROM max(vp.finished_at) - min(vp.started_at)),
                                      0)::numeric, 3)
                  FROM batch.validation_piece AS vp WHERE vp.batch_id = p_batch_id))
     WHERE r.batch_id = p_batch_id;
    PERFORM batch.record_phase_time(p_batch_id, 'validation', v_started);
    PERFORM batch.log_event(p_batch_id, 'VALIDATED', 'pre-commit validation passed');
    IF v_run.mode = 'DRAFT' THEN
        -- Readable with the other drafts (reports, diff): see V017. Lines
        -- before headers, the order readers lock them in (batch.batch_movement)
        -- and finalize and discard do.
        IF to_regclass(format('batch.%I', v_header_tbl)) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE batch.draft_journal_entry_line ATTACH PARTITION '
                           'batch.%I FOR VALUES IN (%s)', v_line_tbl, p_batch_id);
            EXECUTE format('ALTER TABLE batch.draft_journal_entry_header ATTACH PARTITION '
                           'batch.%I FOR VALUES IN (%s)', v_header_tbl, p_batch_id);
        END IF;
        SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id;
        PERFORM batch.log_event(p_batch_id, 'DRAFT_BUILT',
            format('draft %s of period %s built: %s entries, digest %s; review it, then '
                   '"monthend finalize %s" or "monthend discard %s"', p_batch_id, v_run.period,
                   v_run.je_count, encode(v_run.digest, 'hex'), p_batch_id, p_batch_id),
            jsonb_build_object('digest', encode(v_run.digest, 'hex')));
        PERFORM audit.append('DRAFT_BUILT', jsonb_build_object(
            'batch_id', p_batch_id, 'period', v_run.period, 'digest', encode(v_run.digest, 'hex'),
            'entries', v_run.je_count, 'lines', v_run.line_count,
            'input_fingerprint', v_run.input_fingerprint));
    END IF;
END
$$;

GRANT EXECUTE ON PROCEDURE batch.validate_batch(bigint) TO monthend_runner;
