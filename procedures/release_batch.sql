-- Releases what an unfinished batch holds, for batch.cancel_batch and
-- batch.discard_draft: its staging tables are dropped, its claims released
-- (its rows are unposted again; a reversal's postings stay posted), its dead
-- letters removed (the rows are judged afresh by the next run; swept strays
-- and late rows it took are noted again first so they are not lost).
-- Returns how many claimed rows it released. p_keep_entries keeps the staging
-- tables (a superseded draft's entries stay readable). The caller holds the
-- batch's row lock and says what becomes of the batch itself.
CREATE OR REPLACE PROCEDURE batch.release_batch(p_batch_id bigint, INOUT p_released bigint,
                                                p_keep_entries boolean DEFAULT false)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run       batch.run%ROWTYPE;
    v_reversals bigint;
BEGIN
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    IF NOT p_keep_entries THEN
        -- Lines before headers: a draft's are partitions of the drafts' tables,
        -- which readers lock in that order.
        EXECUTE format('DROP TABLE IF EXISTS batch.%I, batch.%I, batch.%I',
                       'stage_journal_entry_line_' || p_batch_id,
                       'stage_journal_entry_header_' || p_batch_id,
                       'stage_upr_detail_' || p_batch_id);
    END IF;

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
    GET DIAGNOSTICS p_released = ROW_COUNT;
    -- A reversal's postings are released the same way: they stay posted.
    DELETE FROM batch.source_reversal AS r WHERE r.batch_id = p_batch_id;
    GET DIAGNOSTICS v_reversals = ROW_COUNT;
    p_released := p_released + v_reversals;

    INSERT INTO subledger.stray_transaction (source_type, source_id)
    SELECT d.source_type, d.source_id FROM batch.dead_letter AS d
     WHERE d.batch_id = p_batch_id
       AND d.reason_code IN ('DATE_MISSING', 'DATE_OUTSIDE_PERIOD', 'PERIOD_CLOSED')
    ON CONFLICT DO NOTHING;
    DELETE FROM batch.dead_letter_resolution AS x WHERE x.batch_id = p_batch_id;
    DELETE FROM batch.dead_letter AS d WHERE d.batch_id = p_batch_id;
    -- A period-end's partial sums (its items stay, as its claims' record).
    DELETE FROM batch.fx_movement_part AS m
     USING batch.range AS rg
     WHERE rg.range_id = m.range_id AND rg.batch_id = p_batch_id;

END
$$;
