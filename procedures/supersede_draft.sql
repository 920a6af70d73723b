-- A built draft replaced by a newer draft of its period (batch.start_run): it
-- gives up what makes it postable, as a cancelled batch does (its claims and
-- dead letters, batch.release_batch), so the new draft takes the same rows;
-- its entries stay in the drafts' tables so that monthend diff
-- --against-draft can say what the change between the two does. Status
-- SUPERSEDED: never finalized; monthend discard (or the next replacement)
-- removes it.
CREATE OR REPLACE PROCEDURE batch.supersede_draft(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run      batch.run%ROWTYPE;
    v_released bigint;
BEGIN
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF v_run.status <> 'DRAFT' THEN
        RAISE EXCEPTION 'batch % is %; only a built draft is superseded', p_batch_id,
                        v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    CALL batch.release_batch(p_batch_id, v_released, true);
    UPDATE batch.run AS r SET status = 'SUPERSEDED', finished_at = clock_timestamp()
     WHERE r.batch_id = p_batch_id;
    PERFORM batch.log_event(p_batch_id, 'SUPERSEDED',
        format('draft %s superseded by a newer draft of %s; its entries stay readable until '
               'it is discarded', p_batch_id, v_run.period));
    PERFORM audit.append('DRAFT_SUPERSEDED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', v_run.period, 'digest', encode(v_run.digest, 'hex'),
        'released_rows', v_released));
END
$$;
