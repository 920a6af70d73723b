-- Phase 2, sequence allocation. Takes a PREFLIGHTED batch. Splits its claimed
-- rows (a reversal's: the postings it reverses) into ranges of range_size
-- rows (per claims partition and source type, in source_id order),
-- reserves one block of je_id for the whole batch from gl.je_id_allocator,
-- and gives each range the sub-block that its rows' je_offsets span. Numbers
-- follow from the claims alone, so a range re-run after a crash numbers its
-- entries exactly as the first attempt would have. Creates the batch's
-- staging tables. Leaves the batch ALLOCATED.
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
    v_claims     text;
    v_late       boolean;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status <> 'PREFLIGHTED' THEN
        RAISE EXCEPTION 'batch % is %; allocation runs on a PREFLIGHTED batch',
                        p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    UPDATE gl.je_id_allocator
       SET next_je_id = next_je_id + v_run.je_count
    RETURNING next_je_id - v_run.je_count INTO v_je_id_base;

    -- Every range statement plans from these statistics: the period's claims
    -- were just written in bulk (autovacuum has not seen them), and reference
    -- tables of a few rows never reach autovacuum's analyze threshold, so
    -- without this the planner guesses thousands of rules and one claim.
    -- Taken before the ranges are cut: knowing the claims' size, the planner
    -- reads them in key order from the primary key and groups the buckets by
    -- hashing, where it otherwise sorted every claim twice (two external
    -- sorts of 330 MB and 411 MB at 10M rows).
    -- A run's claims are the period's partition of batch.source_claim (and,
    -- for the late rows it posts, the partitions of their own periods, listed
    -- in late_periods); a reversal's are its rows in batch.source_reversal.
    -- Ranges are cut the same way from either, per claims partition and
    -- source type, and numbered in je_offset order (the order pre-flight gave
    -- the claims their entries in).
    v_claims := CASE v_run.kind WHEN 'REVERSAL' THEN 'source_reversal'
                                ELSE 'source_claim_' || replace(v_run.period, '-', '_') END;
    EXECUTE format('ANALYZE batch.%I', v_claims);
    ANALYZE gl.currency, gl.fx_rate, gl.posting_rule, gl.journal_template, gl.setting;

    -- A batch without late rows reads its one table and cuts per source type
    -- alone: with the claims period in the window and the grouping, the
    -- planner may sort each source type's claims again by bucket (measured at
    -- 500k claims, EXPLAIN ANALYZE, twice each: that form 296-353 ms, this one
    -- 237-246 ms).
    v_late := v_run.kind = 'RUN' AND cardinality(v_run.late_periods) > 0;
    EXECUTE format($q$
    INSERT INTO batch.range (batch_id, range_no, claim_period, source_type, lo_source_id,
                             hi_source_id, row_count, je_offset, je_count)
    SELECT $1,
           row_number() OVER (ORDER BY b.je_offset),
           %2$s, b.source_type, b.lo_source_id, b.hi_source_id, b.row_count, b.je_offset,
           coalesce(lead(b.je_offset) OVER (ORDER BY b.je_offset), $2) - b.je_offset
    FROM (
        SELECT %3$s c.source_type, c.bucket, min(c.source_id) AS lo_source_id,
               max(c.source_id) AS hi_source_id, count(*) AS row_count,
               min(c.je_offset) AS je_offset
        FROM (
            SELECT %4$s sc.source_type, sc.source_id, sc.je_offset,
                   (row_number() OVER (PARTITION BY %6$s sc.source_type
                                       ORDER BY sc.source_id) - 1) / $3 AS bucket
            FROM batch.%1$I AS sc
            WHERE sc.batch_id = $1 %5$s
        ) AS c
        GROUP BY %3$s c.source_type, c.bucket
    ) AS b
    $q$,
    CASE WHEN v_late THEN 'source_claim' ELSE v_claims END,
    CASE WHEN v_late THEN 'b.claim_period'
         WHEN v_run.kind = 'RUN' THEN '$4[1]' ELSE 'NULL::text' END,
    CASE WHEN v_late THEN 'c.claim_period,' ELSE '' END,
    CASE WHEN v_late THEN 'sc.period AS claim_period,' ELSE '' END,
    CASE WHEN v_late THEN 'AND sc.period = ANY ($4)' ELSE '' END,
    CASE WHEN v_late THEN 'sc.period,' ELSE '' END)
    USING p_batch_id, v_run.je_count, v_run.range_size, v_run.period || v_run.late_periods;
    GET DIAGNOSTICS v_ranges = ROW_COUNT;

    SELECT coalesce(sum(r.row_count), 0), coalesce(sum(r.je_count), 0) INTO v_rows, v_jes
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
