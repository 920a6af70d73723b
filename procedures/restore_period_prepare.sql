-- The first step of restoring an archived period (`monthend restore`): in the
-- transaction that will load it, makes the period's ledger partitions and
-- claims partition again, and for each of its committed batches with entries
-- the batch's partitions, empty, as its commit made them
-- (batch.create_batch_stage, batch.attach_batch_stage), and returns those
-- batches. The caller then loads the archive's rows into the ledger tables
-- (COPY: each row goes to its batch's partition, and a row of no batch of
-- the period fails the load) and calls gl.restore_period, which verifies.
--
-- Refused unless the period is ARCHIVED and p_manifest_sha256 is the digest
-- of the manifest it was archived with (the PERIOD_ARCHIVED event's).
CREATE OR REPLACE FUNCTION gl.restore_period_prepare(p_period text, p_manifest_sha256 text)
RETURNS TABLE (batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
    v_detail jsonb;
    v_batch  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p_period));
    SELECT ap.status, ap.status_detail INTO v_status, v_detail
      FROM gl.accounting_period AS ap WHERE ap.period = p_period FOR UPDATE;
    IF v_status IS DISTINCT FROM 'ARCHIVED' THEN
        RAISE EXCEPTION 'period % is %: only an archived period is restored', p_period,
                        coalesce(v_status, 'not a period')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = '`monthend partitions` shows each period''s status and where it lives.';
    ELSIF p_manifest_sha256 IS DISTINCT FROM v_detail ->> 'manifest_sha256' THEN
        RAISE EXCEPTION 'period % was archived with the manifest whose sha256 is %, not this '
                        'one (%)', p_period, v_detail ->> 'manifest_sha256', p_manifest_sha256
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Restore from the archive it was let go with: %s.',
                                v_detail ->> 'location');
    END IF;

    PERFORM gl.ensure_period_partitions(p_period);
    FOR v_batch IN
        SELECT r.batch_id FROM batch.run AS r
         WHERE r.period = p_period AND r.status = 'COMMITTED' AND r.je_count > 0
         ORDER BY r.batch_id
    LOOP
        PERFORM batch.create_batch_stage(v_batch, p_period);
        PERFORM batch.attach_batch_stage(v_batch, p_period);
        batch_id := v_batch;
        RETURN NEXT;
    END LOOP;
END
$$;
