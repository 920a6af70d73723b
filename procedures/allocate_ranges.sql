-- Phase 2, sequence allocation; for a run or a period-end, the end of
-- pre-flight. Takes a run or period-end PREFLIGHTING whose ranges are all
-- done (batch.preflight_range), or a reversal PREFLIGHTED.
-- A run's ranges were cut and claimed before any of them knew its place in
-- the batch: ranges without a claimed row are dropped, the others numbered
-- again in order and given their block of entries by a prefix sum over their
-- counts (the only serial step numbering needs; their claims count from it,
-- batch.range.claim_offset_base), and the run's counts, the PREFLIGHT_DONE
-- event and the PREFLIGHT_RESULT audit entry are recorded.
-- A period-end's items are made from what its pre-flight ranges computed
-- (the UPR of its policies, the ledger's monetary movements), claimed and
-- cut into ranges by batch.cut_period_end_ranges.
-- A reversal's claimed rows (the postings it reverses, batch.source_reversal)
-- are split into ranges of range_size rows (per source type, in source_id
-- order), each range taking the sub-block that its rows' je_offsets span.
-- Either way the batch reserves one block of je_id from gl.je_id_allocator.
-- Numbers follow from the claims alone, so a range re-run after a crash
-- numbers its entries exactly as the first attempt would have. Creates the
-- batch's staging tables. Leaves the batch ALLOCATED.
CREATE OR REPLACE PROCEDURE batch.allocate_ranges(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started    timestamptz := clock_timestamp();
    v_run        batch.run%ROWTYPE;
    v_je_id_base bigint;
    v_ranges     integer;
    v_rows       bigint;
    v_jes        bigint;
    v_unclaimed  bigint;
    v_window     interval;
    v_missing_fx text;
    v_reasons    jsonb;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.kind = 'RUN' AND v_run.status = 'PREFLIGHTED' THEN
        -- Pre-flighted in one statement by a version before pre-flight by
        -- ranges: its claims count from the batch, and it has no ranges.
        RAISE EXCEPTION 'batch % was pre-flighted by an earlier version of monthend and cannot '
                        'be allocated by this one', p_batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Cancel it ("monthend cancel %s": its rows are unposted again), '
                                'then run the period again.', p_batch_id);
    ELSIF (v_run.kind IN ('REVERSAL', 'AUTO_REVERSAL') AND v_run.status <> 'PREFLIGHTED')
          OR (v_run.kind IN ('RUN', 'PERIOD_END') AND v_run.status <> 'PREFLIGHTING') THEN
        RAISE EXCEPTION 'batch % is %; allocation runs on a run or period-end PREFLIGHTING or a reversal PREFLIGHTED',
                        p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    IF v_run.kind IN ('RUN', 'PERIOD_END') THEN
        -- A run's or a period-end's pre-flight ranges, all done (a run's
        -- leave stage PREFLIGHT when claimed, a period-end's are DONE in it).
        SELECT count(*) INTO v_unclaimed
          FROM batch.range AS rg
         WHERE rg.batch_id = p_batch_id AND rg.stage = 'PREFLIGHT' AND rg.status <> 'DONE';
        IF v_unclaimed > 0 THEN
            RAISE EXCEPTION 'batch % has % ranges still to pre-flight', p_batch_id, v_unclaimed
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Finish them with "monthend resume %s".', p_batch_id);
        END IF;
        -- Pre-flight's ranges ran from the first claim to the last commit (a
        -- run's late ranges were done by its serial part).
        SELECT max(rg.preflight_finished_at) - min(rg.preflight_started_at) INTO v_window
          FROM batch.range AS rg
         WHERE rg.batch_id = p_batch_id
           AND (v_run.kind = 'PERIOD_END' OR rg.claim_period = v_run.period);
        PERFORM batch.record_phase_time(p_batch_id, 'preflight_ranges',
                                        clock_timestamp() - coalesce(v_window, interval '0'));
    END IF;

    IF v_run.kind IN ('REVERSAL', 'AUTO_REVERSAL') THEN
        CALL batch.cut_reversal_ranges(p_batch_id);
    ELSIF v_run.kind = 'PERIOD_END' THEN
        CALL batch.cut_period_end_ranges(p_batch_id);
        SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    ELSE
        DELETE FROM batch.range AS rg WHERE rg.batch_id = p_batch_id AND rg.row_count = 0;
        -- In two steps, each keeping (batch_id, range_no) unique.
        UPDATE batch.range AS rg SET range_no = -x.range_no
          FROM (SELECT r.range_id, row_number() OVER (ORDER BY r.range_no) AS range_no
                FROM batch.range AS r WHERE r.batch_id = p_batch_id) AS x
         WHERE rg.range_id = x.range_id;
        UPDATE batch.range AS rg SET range_no = -rg.range_no WHERE rg.batch_id = p_batch_id;
        -- The prefix sum: each range's entries follow the ranges before it.
        UPDATE batch.range AS rg SET je_offset = x.je_offset, claim_offset_base = x.je_offset
          FROM (SELECT r.range_id,
                       coalesce(sum(r.je_count) OVER (ORDER BY r.range_no
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                           AS je_offset
                FROM batch.range AS r WHERE r.batch_id = p_batch_id) AS x
         WHERE rg.range_id = x.range_id;

        SELECT string_agg(DISTINCT d.currency, ', ' ORDER BY d.currency),
               (SELECT coalesce(jsonb_object_agg(x.reason_code, x.n), '{}')
                  FROM (SELECT dl.reason_code, count(*) AS n FROM batch.dead_letter AS dl
                        WHERE dl.batch_id = p_batch_id GROUP BY dl.reason_code) AS x)
          INTO v_missing_fx, v_reasons
          FROM batch.dead_letter AS d
         WHERE d.batch_id = p_batch_id AND d.reason_code = 'FX_RATE_MISSING';
        PERFORM batch.record_check(p_batch_id, NULL, 'preflight', 'fx_rates_present',
                                   v_missing_fx IS NULL, 'a rate for every currency in use',
                                   coalesce('missing for ' || v_missing_fx
                                            || ' (rows dead-lettered FX_RATE_MISSING)',
                                            'all present'));
        UPDATE batch.run AS r
           SET claimed_rows = x.claimed, je_count = x.entries,
               dead_letter_rows = (SELECT count(*) FROM batch.dead_letter AS d
                                    WHERE d.batch_id = p_batch_id),
               source_rows = (SELECT coalesce(sum(ct.source_rows), 0)
                                FROM batch.control_total AS ct WHERE ct.batch_id = p_batch_id),
               je_number_base = (SELECT ap.je_numbers_used FROM gl.accounting_period AS ap
                                  WHERE ap.period = r.period)
          -- What the ranges claimed: pre-commit validation counts the
          -- claims themselves in pieces on the workers (claims_counted), so
          -- that every range does not wait here for a read of all of them.
          FROM (SELECT coalesce(sum(rg.row_count), 0) AS claimed,
                       coalesce(sum(rg.je_count), 0) AS entries
                FROM batch.range AS rg WHERE rg.batch_id = p_batch_id) AS x
         WHERE r.batch_id = p_batch_id
        RETURNING r.* INTO v_run;
        PERFORM batch.log_event(p_batch_id, 'PREFLIGHT_DONE',
            format('pre-flight: %s rows claimed, %s dead-lettered', v_run.claimed_rows,
                   v_run.dead_letter_rows)
            || CASE WHEN cardinality(v_run.late_periods) > 0
                    THEN format('; late rows of %s among them',
                                array_to_string(v_run.late_periods, ', ')) ELSE '' END,
            jsonb_build_object('claimed', v_run.claimed_rows, 'dead_letters', v_reasons,
                               'late_periods', to_jsonb(v_run.late_periods)));
        PERFORM audit.append('PREFLIGHT_RESULT', jsonb_build_object(
            'batch_id', p_batch_id, 'passed', true, 'claimed', v_run.claimed_rows,
            'dead_letters', v_reasons));
    END IF;

    UPDATE gl.je_id_allocator
       SET next_je_id = next_je_id + v_run.je_count
    RETURNING next_je_id - v_run.je_count INTO v_je_id_base;

    -- Every range statement plans from these statistics: the claims were just
    -- written in bulk (autovacuum has not seen them), and reference tables of
    -- a few rows never reach autovacuum's analyze threshold, so without this
    -- the planner guesses thousands of rules and one claim.
    -- (A reversal's rows were analyzed when its ranges were cut.)
    IF v_run.kind = 'RUN' THEN
        EXECUTE format('ANALYZE batch.%I', batch.claim_partition_name(v_run.period));
    END IF;
    ANALYZE gl.currency, gl.fx_rate, gl.posting_rule, gl.journal_template, gl.setting;

    SELECT count(*), coalesce(sum(r.row_count), 0), coalesce(sum(r.je_count), 0)
      INTO v_ranges, v_rows, v_jes
      FROM batch.range AS r WHERE r.batch_id = p_batch_id;
    PERFORM batch.record_check(p_batch_id, NULL, 'allocation', 'ranges_cover_claims',
                               v_rows = v_run.claimed_rows AND v_jes = v_run.je_count,
                               format('%s rows, %s entries', v_run.claimed_rows, v_run.je_count),
                               format('%s rows, %s entries', v_rows, v_jes));
    IF v_rows <> v_run.claimed_rows OR v_jes <> v_run.je_count THEN
        RAISE EXCEPTION 'ranges of batch % cover % rows and % entries, claims are % and %',
                        p_batch_id, v_rows, v_jes, v_run.claimed_rows, v_run.je_count
            USING ERRCODE = 'data_exception';
    END IF;

    PERFORM batch.create_batch_stage(p_batch_id, v_run.period);
    UPDATE batch.run
       SET status = 'ALLOCATED', je_id_base = v_je_id_base, range_count = v_ranges
     WHERE batch_id = p_batch_id;
    PERFORM batch.record_phase_time(p_batch_id, 'allocation', v_started);
    PERFORM batch.log_event(p_batch_id, 'RANGES_ALLOCATED',
        format('%s ranges of up to %s rows; je_id %s..%s, je_number %s..%s', v_ranges,
               v_run.range_size, v_je_id_base, v_je_id_base + v_run.je_count - 1,
               v_run.je_number_base + 1, v_run.je_number_base + v_run.je_count),
        jsonb_build_object('ranges', v_ranges, 'je_id_base', v_je_id_base));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.allocate_ranges(bigint) TO monthend_runner;
