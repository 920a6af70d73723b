-- The end of every range procedure (batch.process_range,
-- batch.process_reversal_range), in the range's own transaction: records the
-- range's checks in batch.validation_result (entries balance; source rows and
-- the control total read from the source agree with the range; the numbers
-- are exactly the range's block), raises if any failed (so nothing of the
-- range commits), else marks it DONE with its digest, logs RANGE_DONE in the
-- timeline and the audit chain, and releases the range's claim.
-- p_failures carries the caller's own failed checks.
CREATE OR REPLACE PROCEDURE batch.complete_range(
    p_range_id      bigint,
    p_headers       bigint,
    p_lines         bigint,
    p_unbalanced    bigint,
    p_sources       bigint,
    p_source_amount numeric,
    p_min_no        bigint,
    p_max_no        bigint,
    p_distinct_no   bigint,
    p_digest        bytea,
    p_src_rows      bigint,
    p_src_amount    numeric,
    p_failures      text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_range    batch.range%ROWTYPE;
    v_run      batch.run%ROWTYPE;
    v_first_no bigint;
    v_failures text[] := coalesce(p_failures, '{}'::text[]);
BEGIN
    SELECT * INTO STRICT v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id;
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = v_range.batch_id;
    v_first_no := v_run.je_number_base + v_range.je_offset + 1;
    IF NOT batch.record_check(v_run.batch_id, p_range_id, 'range', 'entries_balance',
                              p_unbalanced = 0, '0 unbalanced entries',
                              p_unbalanced || ' unbalanced entries') THEN
        v_failures := v_failures || format('%s entries do not balance', p_unbalanced);
    END IF;
    IF NOT batch.record_check(v_run.batch_id, p_range_id, 'range', 'source_rows_match',
                              p_sources = v_range.row_count AND p_src_rows = v_range.row_count,
                              v_range.row_count || ' source rows',
                              format('%s in entries, %s in source', p_sources, p_src_rows)) THEN
        v_failures := v_failures || format('%s source rows expected, %s posted, %s in source',
                                           v_range.row_count, p_sources, p_src_rows);
    END IF;
    IF NOT batch.record_check(v_run.batch_id, p_range_id, 'range', 'control_total_matches',
                              p_source_amount = p_src_amount, p_src_amount::text,
                              p_source_amount::text) THEN
        v_failures := v_failures || format('source total %s, entries carry %s',
                                           p_src_amount, p_source_amount);
    END IF;
    IF NOT batch.record_check(v_run.batch_id, p_range_id, 'range', 'numbers_fill_block',
                              p_headers = v_range.je_count AND p_distinct_no = v_range.je_count
                              AND p_min_no = v_first_no
                              AND p_max_no = v_first_no + v_range.je_count - 1,
                              format('%s..%s', v_first_no, v_first_no + v_range.je_count - 1),
                              format('%s..%s, %s entries', p_min_no, p_max_no, p_headers)) THEN
        v_failures := v_failures || format('numbers %s..%s (%s entries) instead of %s..%s',
                                           p_min_no, p_max_no, p_headers, v_first_no,
                                           v_first_no + v_range.je_count - 1);
    END IF;
    IF cardinality(v_failures) > 0 THEN
        RAISE EXCEPTION 'range % of batch % failed validation: %', v_range.range_no,
                        v_run.batch_id, array_to_string(v_failures, '; ')
            USING ERRCODE = 'data_exception';
    END IF;

    UPDATE batch.range
       SET status = 'DONE', finished_at = clock_timestamp(), line_count = p_lines,
           digest = p_digest, last_error = NULL
     WHERE range_id = p_range_id;
    PERFORM batch.log_event(v_run.batch_id, 'RANGE_DONE',
        format('range %s done: %s entries, %s lines', v_range.range_no, p_headers, p_lines),
        jsonb_build_object('range_no', v_range.range_no, 'rows', v_range.row_count,
                           'seconds', round(extract(epoch FROM clock_timestamp()
                                                    - v_range.started_at)::numeric, 3)));
    PERFORM audit.append('RANGE_DONE', jsonb_build_object(
        'batch_id', v_run.batch_id, 'range_no', v_range.range_no,
        'digest', encode(p_digest, 'hex'), 'entries', p_headers, 'lines', p_lines));
    PERFORM pg_advisory_unlock(batch.lock_key('range_claim', p_range_id));
END
$$;
