-- Removes a draft and everything it holds: its staging tables, claims and dead
-- letters (batch.release_batch), then its ranges and their totals, checks,
-- control totals, KPIs, events and the batch row itself, and hands its je_id
-- block back when no later batch took one, so the database is as if it had
-- never been built (the batch id it used stays used). The audit chain keeps DRAFT_BUILT, if it got
-- that far, and records DRAFT_DISCARDED. A draft at any phase is discarded
-- (one killed while being built included); a batch that is not a draft, or a
-- draft already finalized, is refused.
CREATE OR REPLACE PROCEDURE batch.discard_draft(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run      batch.run%ROWTYPE;
    v_released bigint;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found',
            HINT = '"monthend status" lists the batches and their modes.';
    ELSIF v_run.mode <> 'DRAFT' THEN
        RAISE EXCEPTION 'batch % is not a draft', p_batch_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('An unfinished batch is abandoned with "monthend cancel %s"; a committed one is corrected by reversal.',
                                p_batch_id);
    ELSIF v_run.status IN ('COMMITTED', 'CANCELLED') THEN
        RAISE EXCEPTION 'draft % is % and cannot be discarded', p_batch_id,
                        CASE v_run.status WHEN 'COMMITTED' THEN 'finalized' ELSE 'cancelled' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE v_run.status WHEN 'COMMITTED'
                              THEN format('Its entries are posted: correct them with "monthend reverse %s --reason CODE".',
                                          p_batch_id)
                              ELSE 'It holds nothing any more.' END;
    END IF;

    CALL batch.release_batch(p_batch_id, v_released);
    DELETE FROM batch.range_total AS t
     USING batch.range AS rg
     WHERE rg.batch_id = p_batch_id AND t.range_id = rg.range_id;
    DELETE FROM batch.range AS rg WHERE rg.batch_id = p_batch_id;
    DELETE FROM batch.validation_result AS v WHERE v.batch_id = p_batch_id;
    DELETE FROM batch.validation_piece AS vp WHERE vp.batch_id = p_batch_id;
    DELETE FROM batch.control_total AS c WHERE c.batch_id = p_batch_id;
    -- A period-end draft's items and revaluation detail.
    DELETE FROM batch.period_end_item AS i WHERE i.batch_id = p_batch_id;
    DELETE FROM batch.fx_revaluation_detail AS f WHERE f.batch_id = p_batch_id;
    DELETE FROM batch.kpi AS k WHERE k.batch_id = p_batch_id;
    DELETE FROM batch.event AS e WHERE e.batch_id = p_batch_id;
    DELETE FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    -- Its je_id block goes back when it is the latest handed out (a draft
    -- replaced by the next one is): the next batch is numbered as if the
    -- draft had never been.
    UPDATE gl.je_id_allocator AS a SET next_je_id = v_run.je_id_base
     WHERE v_run.je_id_base IS NOT NULL AND a.next_je_id = v_run.je_id_base + v_run.je_count;

    PERFORM audit.append('DRAFT_DISCARDED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', v_run.period, 'status', v_run.status,
        'digest', encode(v_run.digest, 'hex'), 'released_rows', v_released));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.discard_draft(bigint) TO monthend_runner;
