-- Makes a draft the period's posting: the commit a run makes (batch.commit_batch:
-- the same attach, numbers and seal), in one transaction with the check that
-- nothing the draft was built from has changed. Under the period's advisory
-- lock (and its late rows' periods'), the inputs' fingerprint is computed again
-- (batch.draft_input_fingerprint) and compared with the one recorded at the
-- draft's pre-flight; the period must still be OPEN with the numbering the
-- draft was numbered from, and the periods of its late rows still closed with
-- no open period between them and it. Any difference refuses, naming what changed, and
-- leaves the draft as it was. Leaves the batch COMMITTED (mode DRAFT says it
-- was reviewed as a draft first).
CREATE OR REPLACE PROCEDURE batch.finalize_draft(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run          batch.run%ROWTYPE;
    v_now          jsonb;
    v_changed      text;
    v_status       text;
    v_numbers_used bigint;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found',
            HINT = '"monthend status" lists the batches and their modes.';
    ELSIF v_run.mode <> 'DRAFT' THEN
        RAISE EXCEPTION 'batch % is not a draft', p_batch_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('A run is committed by "monthend resume %s".', p_batch_id);
    ELSIF v_run.status = 'COMMITTED' THEN
        RAISE EXCEPTION 'draft % is already finalized', p_batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Its entries are posted: "monthend status %s".', p_batch_id);
    ELSIF v_run.status = 'SUPERSEDED' THEN
        RAISE EXCEPTION 'draft % was superseded by a newer draft of %', p_batch_id, v_run.period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Finalize the newer one ("monthend status" names it), or build again with "monthend run --period %s --draft".',
                                v_run.period);
    ELSIF v_run.status <> 'DRAFT' THEN
        RAISE EXCEPTION 'draft % is %, not built yet', p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE WHEN v_run.status = 'CANCELLED' THEN 'Build a new draft with "monthend run --period P --draft".'
                              ELSE format('Finish building it with "monthend resume %s", or remove it with "monthend discard %s".',
                                          p_batch_id, p_batch_id) END;
    END IF;

    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p.period))
       FROM unnest(v_run.period || v_run.late_periods) AS p (period);
    SELECT ap.status, ap.je_numbers_used INTO v_status, v_numbers_used
      FROM gl.accounting_period AS ap WHERE ap.period = v_run.period FOR UPDATE;
    IF v_status <> 'OPEN' THEN
        RAISE EXCEPTION 'period % is %; draft % cannot be finalized', v_run.period, v_status,
                        p_batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = gl.period_posting_hint(v_run.period, v_status);
    ELSIF v_numbers_used <> v_run.je_number_base THEN
        RAISE EXCEPTION 'period % has used % journal-entry numbers since draft % was numbered from %',
                        v_run.period, v_numbers_used - v_run.je_number_base, p_batch_id,
                        v_run.je_number_base
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Build the draft again: "monthend run --period %s --draft".',
                                v_run.period);
    END IF;

    -- Its late rows were taken from closed periods with no open period between
    -- them and this one: still so, or a reopened period's run must have them.
    SELECT string_agg(format('%s is %s', ap.period, ap.status), ', ' ORDER BY ap.period)
      INTO v_changed
      FROM gl.accounting_period AS ap
     WHERE ap.period >= (SELECT min(p.period) FROM unnest(v_run.late_periods) AS p (period))
       AND ap.period < v_run.period
       AND (ap.period = ANY (v_run.late_periods)
            AND ap.status NOT IN ('CLOSED', 'PERMANENTLY_CLOSED')
            OR ap.status = 'OPEN');
    IF v_changed IS NOT NULL THEN
        RAISE EXCEPTION 'draft % cannot be finalized: it posts late rows of % which are no longer left to %: %',
                        p_batch_id, array_to_string(v_run.late_periods, ', '), v_run.period,
                        v_changed
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Build it again with "monthend run --period %s --draft" (it replaces this one), or discard it with "monthend discard %s".',
                                v_run.period, p_batch_id);
    END IF;

    v_now := batch.draft_input_fingerprint(p_batch_id);
    SELECT string_agg(CASE k.key
                          WHEN 'source_rows' THEN format('source rows of %s', v_run.period)
                          WHEN 'fx_rates' THEN 'FX rates (gl.fx_rate)'
                          WHEN 'posting_rules' THEN 'posting rules (gl.posting_rule)'
                          WHEN 'journal_templates' THEN 'journal templates (gl.journal_template)'
                          WHEN 'currencies' THEN 'currencies (gl.currency)'
                          WHEN 'accounts' THEN 'accounts (gl.account)'
                          WHEN 'lines_of_business' THEN 'lines of business (gl.line_of_business)'
                          WHEN 'settings' THEN 'settings (gl.setting)'
                          WHEN 'policies' THEN 'policies (subledger.policy)'
                          WHEN 'ledger_batches' THEN 'the committed batches of the ledger'
                          WHEN 'fx_closing_rates' THEN 'closing rates (gl.fx_closing_rate)'
                          WHEN 'period_end_accounts'
                              THEN 'period-end accounts (gl.period_end_account)'
                          ELSE k.key END
                      || coalesce(' (' || batch.draft_row_count_change(
                                              v_run.input_fingerprint -> k.key, v_now -> k.key)
                                  || ')', ''),
                      '; ' ORDER BY k.key)
      INTO v_changed
      FROM jsonb_object_keys(v_run.input_fingerprint || v_now) AS k (key)
     WHERE v_run.input_fingerprint -> k.key IS DISTINCT FROM v_now -> k.key;
    IF v_changed IS NOT NULL THEN
        RAISE EXCEPTION 'draft % cannot be finalized: what it was built from has changed: %',
                        p_batch_id, v_changed
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Build it again with "monthend run --period %s --draft" (it replaces this one), or discard it with "monthend discard %s".',
                                v_run.period, p_batch_id);
    END IF;

    PERFORM audit.append('DRAFT_FINALIZED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', v_run.period, 'digest', encode(v_run.digest, 'hex'),
        'input_fingerprint', v_now));
    -- Out of the drafts' tables, into the ledger's (both catalog changes);
    -- lines before headers, the order every reader and writer of them uses.
    IF to_regclass(format('batch.stage_journal_entry_header_%s', p_batch_id)) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE batch.draft_journal_entry_line DETACH PARTITION batch.%I',
                       'stage_journal_entry_line_' || p_batch_id);
        EXECUTE format('ALTER TABLE batch.draft_journal_entry_header DETACH PARTITION batch.%I',
                       'stage_journal_entry_header_' || p_batch_id);
    END IF;
    UPDATE batch.run AS r SET status = 'VALIDATED' WHERE r.batch_id = p_batch_id;
    CALL batch.commit_batch(p_batch_id);
END
$$;

GRANT EXECUTE ON PROCEDURE batch.finalize_draft(bigint) TO monthend_runner;
