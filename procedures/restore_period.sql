-- The last step of restoring an archived period, in the transaction of
-- gl.restore_period_prepare after the archive's rows were loaded: checks
-- that the claims loaded are the ones archived, verifies every batch
-- of the period against the root the audit chain sealed (audit.verify_batch),
-- and makes the period RESTORED (PERIOD_RESTORED in the chain). Any
-- difference raises and the whole restore rolls back: the period stays
-- ARCHIVED, nothing of it half loaded. The restored partitions are as
-- read-only as any ledger partition; `monthend archive` drops them again.
CREATE OR REPLACE PROCEDURE gl.restore_period(p_period text, p_manifest_sha256 text,
                                              p_location text, p_reason text DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_detail  jsonb;
    v_batch   bigint;
    v_claims  bigint;
    v_reversed bigint;
    v_problem record;
BEGIN
    SELECT ap.status_detail INTO v_detail
      FROM gl.accounting_period AS ap
     WHERE ap.period = p_period AND ap.status = 'ARCHIVED' FOR UPDATE;
    IF NOT FOUND OR p_manifest_sha256 IS DISTINCT FROM v_detail ->> 'manifest_sha256' THEN
        RAISE EXCEPTION 'period % is not archived with manifest %', p_period, p_manifest_sha256
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Call gl.restore_period_prepare first, in the same transaction.';
    END IF;

    EXECUTE format('SELECT count(*) FROM batch.%I', batch.claim_partition_name(p_period))
       INTO v_claims;
    SELECT count(*) INTO v_reversed FROM batch.source_reversal AS r WHERE r.period = p_period;
    IF v_claims IS DISTINCT FROM (v_detail ->> 'claims')::bigint
       OR v_reversed IS DISTINCT FROM (v_detail ->> 'source_reversals')::bigint THEN
        RAISE EXCEPTION 'restoring period %: % claims and % reversed postings loaded, % and % '
                        'archived', p_period, v_claims, v_reversed, v_detail ->> 'claims',
                        v_detail ->> 'source_reversals'
            USING ERRCODE = 'data_exception', HINT = 'Nothing was restored.';
    END IF;

    -- RESTORED first: the batches are verified as the restored period's (the
    -- status and its PERIOD_RESTORED row roll back with everything else if
    -- one does not verify).
    UPDATE gl.accounting_period
       SET status = 'RESTORED',
           status_reason = coalesce(p_reason, 'restored from ' || p_location),
           status_detail = v_detail || jsonb_build_object('restored_from', p_location)
     WHERE period = p_period;

    FOR v_batch IN
        SELECT r.batch_id FROM batch.run AS r
         WHERE r.period = p_period AND r.status = 'COMMITTED' ORDER BY r.batch_id
    LOOP
        SELECT * INTO v_problem FROM audit.verify_batch(v_batch) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'restoring period %: batch % does not verify: %', p_period, v_batch,
                            to_jsonb(v_problem)
                USING ERRCODE = 'data_exception', HINT = 'Nothing was restored.';
        END IF;
    END LOOP;

END
$$;
