-- Lets go of an archived period, in one transaction: after `monthend
-- archive` wrote the period's rows to files and verified them there, the
-- period's ledger partitions and claims partition are detached and dropped,
-- the period becomes ARCHIVED and PERIOD_ARCHIVED enters the audit chain with
-- the archive's manifest digest and location.
--
-- p_sealed is what the verified archive holds, checked here against what the
-- database sealed before anything is dropped: {"seal_digest": hex,
-- "batches": {"<batch_id>": "<batch root hex>", ...}, "headers": n,
-- "lines": n, "claims": n, "source_reversals": n, "claims_fingerprint":
-- gl.archive_rows_fingerprint when the files were written}. Every committed batch of the period must be there
-- with the root it was sealed with, and nothing else.
--
-- Refused (nothing changes) unless the period is PERMANENTLY_CLOSED, or
-- RESTORED from this same archive (p_manifest_sha256 is the one it was
-- archived with: the files are not written again). Refused while a batch of
-- the period reverses a batch of a period still in the database: periods are
-- archived in order, so that no batch in the database reverses entries that
-- are gone while the entries it reverses are not.
CREATE OR REPLACE PROCEDURE gl.archive_period(p_period text, p_manifest_sha256 text,
                                              p_location text, p_sealed jsonb,
                                              p_reason text DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status   text;
    v_seal     bytea;
    v_detail   jsonb;
    v_problem  text;
    v_claims   bigint := 0;
    v_reversed bigint;
    v_lines    bigint;
    v_headers  bigint;
    v_table    text;
BEGIN
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p_period));
    SELECT ap.status, ap.seal_digest, ap.status_detail INTO v_status, v_seal, v_detail
      FROM gl.accounting_period AS ap WHERE ap.period = p_period FOR UPDATE;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'accounting period % does not exist', p_period
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF v_status NOT IN ('PERMANENTLY_CLOSED', 'RESTORED') THEN
        RAISE EXCEPTION 'period % is %: only a permanently closed period is archived',
                        p_period, v_status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE v_status
                         WHEN 'ARCHIVED' THEN 'It is archived already; `monthend partitions` '
                                              'shows where.'
                         ELSE format('Close and lock it first: `monthend period close %s`, '
                                     'then `monthend period lock %s`.', p_period, p_period) END;
    ELSIF v_status = 'RESTORED'
          AND p_manifest_sha256 IS DISTINCT FROM v_detail ->> 'manifest_sha256' THEN
        RAISE EXCEPTION 'period % was restored from the archive whose manifest has sha256 %, '
                        'not %', p_period, v_detail ->> 'manifest_sha256', p_manifest_sha256
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Archive it again to that archive: `monthend archive --period '
                                '%s --to %s`.', p_period, v_detail ->> 'location');
    END IF;

    -- Unfinished batches that read or write the period's rows: its own, a
    -- reversal of one of its batches, a run posting its late rows. (A
    -- superseded draft holds nothing of the ledger.)
    SELECT string_agg(format('batch %s (%s %s of %s)', r.batch_id, r.kind, r.status, r.period),
                      ', ' ORDER BY r.batch_id)
      INTO v_problem
      FROM batch.run AS r
     WHERE r.status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED')
       AND (r.period = p_period OR p_period = ANY (r.late_periods)
            OR r.reverses_batch_id IN (SELECT x.batch_id FROM batch.run AS x
                                       WHERE x.period = p_period));
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'period % is in use by unfinished batches: %', p_period, v_problem
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Let them finish, or cancel them (`monthend cancel BATCH`; a draft: '
                         '`monthend discard DRAFT`), then archive.';
    END IF;

    SELECT string_agg(format('batch %s reverses batch %s of %s (%s)', r.batch_id, o.batch_id,
                             o.period, ap.status), '; ' ORDER BY r.batch_id),
           min(o.period)
      INTO v_problem, v_table
      FROM batch.run AS r
      JOIN batch.run AS o ON o.batch_id = r.reverses_batch_id
      JOIN gl.accounting_period AS ap ON ap.period = o.period
     WHERE r.period = p_period AND r.status = 'COMMITTED' AND o.period <> p_period
       AND ap.status <> 'ARCHIVED';
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'period % cannot be archived before the periods whose batches it '
                        'reverses: %', p_period, v_problem
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Archive periods in order: `monthend archive --period %s` '
                                'first.', v_table);
    END IF;

    IF p_sealed ->> 'seal_digest' IS DISTINCT FROM encode(v_seal, 'hex') THEN
        RAISE EXCEPTION 'the archive holds period seal %, the database sealed %',
                        p_sealed ->> 'seal_digest', encode(v_seal, 'hex')
            USING ERRCODE = 'data_exception',
                  HINT = 'The archive is not of this period as it is sealed; nothing was dropped.';
    END IF;
    SELECT string_agg(format('batch %s: sealed %s, archived %s',
                             coalesce(r.batch_id, a.key::bigint),
                             coalesce(encode(r.digest, 'hex'), 'nothing'),
                             coalesce(a.value, 'nothing')), '; ')
      INTO v_problem
      FROM (SELECT x.batch_id, x.digest FROM batch.run AS x
            WHERE x.period = p_period AND x.status = 'COMMITTED') AS r
      FULL JOIN jsonb_each_text(p_sealed -> 'batches') AS a ON a.key = r.batch_id::text
     WHERE r.digest IS NULL OR a.value IS DISTINCT FROM encode(r.digest, 'hex');
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'the archive''s batches are not the period''s sealed batches: %',
                        v_problem
            USING ERRCODE = 'data_exception',
                  HINT = 'Nothing was dropped. Write the archive again with `monthend archive`.';
    END IF;

    IF to_regclass(format('batch.%I', batch.claim_partition_name(p_period))) IS NOT NULL
    THEN
        EXECUTE format('SELECT count(*) FROM batch.%I',
                       batch.claim_partition_name(p_period)) INTO v_claims;
    END IF;
    SELECT count(*) INTO v_reversed FROM batch.source_reversal AS s WHERE s.period = p_period;
    -- What the partitions hold, counted: a row outside every range of its
    -- batch is not in the archive and must not be dropped unseen.
    IF to_regclass('gl.journal_entry_header_' || replace(p_period, '-', '_')) IS NOT NULL THEN
        EXECUTE format('SELECT (SELECT count(*) FROM gl.%I), (SELECT count(*) FROM gl.%I)',
                       'journal_entry_header_' || replace(p_period, '-', '_'),
                       'journal_entry_line_' || replace(p_period, '-', '_'))
           INTO v_headers, v_lines;
    ELSE
        v_headers := 0;
        v_lines := 0;
    END IF;
    IF (p_sealed ->> 'headers')::bigint IS DISTINCT FROM v_headers
       OR (p_sealed ->> 'lines')::bigint IS DISTINCT FROM v_lines THEN
        RAISE EXCEPTION 'the archive holds % headers and % lines of period %, its partitions '
                        '% and %', p_sealed ->> 'headers', p_sealed ->> 'lines',
                        p_period, v_headers, v_lines
            USING ERRCODE = 'data_exception',
                  HINT = 'Nothing was dropped. `monthend verify` names what differs.';
    END IF;
    IF p_sealed ->> 'claims_fingerprint' IS DISTINCT FROM gl.archive_rows_fingerprint(p_period)
    THEN
        RAISE EXCEPTION 'the claims or reversed postings of period % changed since the archive '
                        'was written', p_period
            USING ERRCODE = 'data_exception',
                  HINT = 'Nothing was dropped. Archive to an empty directory to write it again.';
    END IF;
    IF (p_sealed ->> 'claims')::bigint IS DISTINCT FROM v_claims
       OR (p_sealed ->> 'source_reversals')::bigint IS DISTINCT FROM v_reversed THEN
        RAISE EXCEPTION 'the archive holds % claims and % reversed postings of period %, the '
                        'database % and %', p_sealed ->> 'claims',
                        p_sealed ->> 'source_reversals', p_period, v_claims, v_reversed
            USING ERRCODE = 'data_exception',
                  HINT = 'Nothing was dropped. Write the archive again with `monthend archive`.';
    END IF;


    -- ARCHIVED (and PERIOD_ARCHIVED in the chain) first: the period's claims
    -- and reversed postings then go whole (batch.source_claim_follows_reversal).
    UPDATE gl.accounting_period
       SET status = 'ARCHIVED',
           status_reason = coalesce(p_reason, 'archived to ' || p_location),
           status_detail = jsonb_build_object(
               'manifest_sha256', p_manifest_sha256, 'location', p_location,
               'seal_digest', encode(v_seal, 'hex'),
               'batches', (SELECT count(*) FROM jsonb_object_keys(p_sealed -> 'batches')),
               'headers', v_headers, 'lines', v_lines, 'claims', v_claims,
               'source_reversals', v_reversed)
     WHERE period = p_period;

    -- The reversed postings of the period's rows go with its claims (they
    -- reference them); the archive holds both.
    DELETE FROM batch.source_reversal AS s WHERE s.period = p_period;
    FOREACH v_table IN ARRAY ARRAY['gl.journal_entry_header', 'gl.journal_entry_line',
                                   'batch.source_claim'] LOOP
        IF to_regclass(v_table || '_' || replace(p_period, '-', '_')) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', v_table,
                           v_table || '_' || replace(p_period, '-', '_'));
            EXECUTE format('DROP TABLE %s', v_table || '_' || replace(p_period, '-', '_'));
        END IF;
    END LOOP;

END
$$;
