-- Phase 7, the atomic commit. Takes a VALIDATED batch. In one transaction:
-- attaches the batch's staging tables as the batch's partitions of the
-- period's ledger partitions (a catalog change: the CHECKs prove the bounds and
-- the indexes exist, so nothing is scanned or copied and the cost does not grow
-- with the batch), moves them into gl, advances the period's used numbers,
-- resolves the dead letters its rows had (a reversal's commit is what makes
-- the postings it reverses reversed, and their rows postable again: nothing
-- else changes for that), and seals the batch into the audit
-- chain with its seal version and digest (batch.batch_digest: under version 2
-- the Merkle root over the range roots).
-- Before this commits nothing of the batch is in the ledger; after, all of it.
CREATE OR REPLACE PROCEDURE batch.commit_batch(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started  timestamptz := clock_timestamp();
    v_run      batch.run%ROWTYPE;
    v_digest   bytea;
    v_ranges   jsonb;
    v_resolved bigint;
    v_table    text;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status <> 'VALIDATED' THEN
        RAISE EXCEPTION 'batch % is %; only a VALIDATED batch can be committed',
                        p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_run.je_count > 0 THEN
        PERFORM batch.attach_batch_stage(p_batch_id, v_run.period);
    ELSE
        FOREACH v_table IN ARRAY ARRAY['journal_entry_header', 'journal_entry_line'] LOOP
            EXECUTE format('DROP TABLE IF EXISTS batch.%I',
                           'stage_' || v_table || '_' || p_batch_id);
        END LOOP;
    END IF;

    -- A period-end's UPR detail becomes its partition of gl.upr_detail, the
    -- same way (its CHECK proves the bound).
    IF v_run.kind = 'PERIOD_END' THEN
        EXECUTE format('ALTER TABLE gl.upr_detail ATTACH PARTITION batch.%I FOR VALUES IN (%s)',
                       'stage_upr_detail_' || p_batch_id, p_batch_id);
        EXECUTE format('ALTER TABLE batch.%I SET SCHEMA gl', 'stage_upr_detail_' || p_batch_id);
        EXECUTE format('ALTER TABLE gl.%I RENAME TO %I', 'stage_upr_detail_' || p_batch_id,
                       'upr_detail_b' || p_batch_id);
    END IF;

    UPDATE gl.accounting_period
       SET je_numbers_used = je_numbers_used + v_run.je_count
     WHERE period = v_run.period;

    -- A reversal's rows dated in a period no longer OPEN cannot be posted
    -- again there: noted as strays, the next pre-flight dead-letters them
    -- (PERIOD_CLOSED) or, under late_row_policy NEXT_OPEN_PERIOD, the first
    -- open period after theirs posts them; none is left neither posted nor
    -- dead-lettered.
    INSERT INTO subledger.stray_transaction (source_type, source_id)
    SELECT r.source_type, r.source_id
    FROM batch.source_reversal AS r
    JOIN gl.accounting_period AS ap ON ap.period = r.period
    WHERE r.batch_id = p_batch_id AND ap.status NOT IN ('OPEN', 'FUTURE')
    ON CONFLICT DO NOTHING;

    UPDATE batch.dead_letter AS d
       SET status = 'RESOLVED', resolved_by_batch = p_batch_id
      FROM batch.dead_letter_resolution AS x
     WHERE x.batch_id = p_batch_id AND d.dead_letter_id = x.dead_letter_id
       AND d.status = 'OPEN';
    GET DIAGNOSTICS v_resolved = ROW_COUNT;

    SELECT d.digest, d.ranges INTO v_digest, v_ranges FROM batch.batch_digest(p_batch_id) AS d;

    UPDATE batch.run
       SET status = 'COMMITTED', digest = v_digest, finished_at = clock_timestamp()
     WHERE batch_id = p_batch_id;
    PERFORM batch.record_phase_time(p_batch_id, 'commit', v_started);

    PERFORM batch.log_event(p_batch_id, 'COMMITTED',
        format('batch %s committed: %s entries, %s lines, digest %s', p_batch_id,
               v_run.je_count, v_run.line_count, encode(v_digest, 'hex')),
        jsonb_build_object('resolved_dead_letters', v_resolved));
    PERFORM audit.append('BATCH_COMMITTED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', v_run.period, 'kind', v_run.kind,
        'reverses_batch_id', v_run.reverses_batch_id, 'reversal_method', v_run.reversal_method,
        'seal_version', v_run.seal_version, 'digest', encode(v_digest, 'hex'),
        'ranges', v_ranges, 'entries', v_run.je_count, 'lines', v_run.line_count,
        'claimed_rows', v_run.claimed_rows, 'dead_letter_rows', v_run.dead_letter_rows,
        'je_id_base', v_run.je_id_base, 'je_number_base', v_run.je_number_base));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.commit_batch(bigint) TO monthend_runner;
