-- Abandons an unfinished batch and leaves nothing behind: its staging tables
-- are dropped, its claims released (its rows are unposted again), its dead
-- letters removed (the rows are judged afresh by the next run; swept strays
-- are noted again first so they are not lost). The batch's own history
-- (run, ranges, events, checks) stays, marked CANCELLED.
CREATE OR REPLACE PROCEDURE batch.cancel_batch(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run      batch.run%ROWTYPE;
    v_released  bigint;
    v_reversals bigint;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status IN ('COMMITTED', 'CANCELLED') THEN
        RAISE EXCEPTION 'batch % is % and cannot be cancelled', p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A committed batch is corrected with reversing entries.';
    END IF;

    EXECUTE format('DROP TABLE IF EXISTS batch.%I, batch.%I',
                   'stage_journal_entry_header_' || p_batch_id,
                   'stage_journal_entry_line_' || p_batch_id);

    -- Late rows it took (claimed, or dead-lettered again) are noted again:
    -- the next run of the first open period after theirs takes them.
    INSERT INTO subledger.stray_transaction (source_type, source_id)
    SELECT c.source_type, c.source_id FROM batch.source_claim AS c
     WHERE c.period = ANY (v_run.late_periods) AND c.batch_id = p_batch_id
    UNION
    SELECT d.source_type, d.source_id FROM batch.dead_letter AS d
      JOIN subledger.source_transaction AS s
        ON s.source_type = d.source_type AND s.source_id = d.source_id
     WHERE d.batch_id = p_batch_id AND cardinality(v_run.late_periods) > 0
       AND to_char(s.txn_date, 'YYYY-MM') = ANY (v_run.late_periods)
    ON CONFLICT DO NOTHING;
    DELETE FROM batch.source_claim AS c
     WHERE c.period = ANY (v_run.period || v_run.late_periods) AND c.batch_id = p_batch_id;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    -- A reversal's postings are released the same way: they stay posted.
    DELETE FROM batch.source_reversal AS r WHERE r.batch_id = p_batch_id;
    GET DIAGNOSTICS v_reversals = ROW_COUNT;
    v_released := v_released + v_reversals;

    INSERT INTO subledger.stray_transaction (source_type, source_id)
    SELECT d.source_type, d.source_id FROM batch.dead_letter AS d
     WHERE d.batch_id = p_batch_id
       AND d.reason_code IN ('DATE_MISSING', 'DATE_OUTSIDE_PERIOD', 'PERIOD_CLOSED')
    ON CONFLICT DO NOTHING;
    DELETE FROM batch.dead_letter_resolution AS x WHERE x.batch_id = p_batch_id;
    DELETE FROM batch.dead_letter AS d WHERE d.batch_id = p_batch_id;

    UPDATE batch.range SET status = 'FAILED', worker_pid = NULL,
                           last_error = coalesce(last_error, 'batch cancelled')
     WHERE batch_id = p_batch_id AND status IN ('PENDING', 'RUNNING');
    UPDATE batch.run SET status = 'CANCELLED', finished_at = clock_timestamp()
     WHERE batch_id = p_batch_id;

    PERFORM batch.log_event(p_batch_id, 'CANCELLED',
        format('batch %s cancelled; %s claimed rows released', p_batch_id, v_released),
        '{}', 'WARNING');
    PERFORM audit.append('BATCH_CANCELLED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', v_run.period, 'released_rows', v_released));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.cancel_batch(bigint) TO monthend_runner;
