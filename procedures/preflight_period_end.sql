-- Phase 1 of a period-end (batch.preflight hands a PERIOD_END batch here),
-- its serial part. Takes a STARTED period-end. Gates, before any write: the
-- period is OPEN; every source row dated in it is posted or dead-lettered
-- (gl.period_unposted_rows: the written premium the UPR is computed from is
-- complete); the functional currency is configured; gl.period_end_account
-- names the entries' accounts. A failed gate marks the batch FAILED and returns.
-- Then it cuts the work of its pre-flight into ranges that the batch's
-- workers run in parallel (stage PREFLIGHT, batch.preflight_range):
--   POLICY  the policies in force at the period's end (inception <= E <
--           expiry), in equal spans of policy ids of about range_size
--           policies each: batch.compute_upr_range writes their UPR to the
--           batch's staging table batch.stage_upr_detail_<batch>;
--   LEDGER  the journal entries that move the monetary accounts' balances
--           since the latest closed period (whose gl.period_balance closing
--           is the opening): every committed batch of the periods after it up
--           to this one, in spans of je_ids; batch.sum_ledger_range sums each
--           span's foreign-currency lines of monetary accounts.
-- A draft records the fingerprint of its inputs first.
-- Leaves the batch PREFLIGHTING; batch.allocate_ranges then turns the sums
-- into the batch's items (batch.cut_period_end_ranges).
CREATE OR REPLACE PROCEDURE batch.preflight_period_end(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started        timestamptz := clock_timestamp();
    v_run            batch.run%ROWTYPE;
    v_period_status  text;
    v_end            date;
    v_unposted       bigint;
    v_functional_mu  integer;
    v_missing_accts  text;
    v_gate_errors    text[] := '{}'::text[];
    v_opening        text;
    v_ledger_batches bigint[];
    v_policies       bigint;
    v_lo             bigint;
    v_hi             bigint;
    v_policy_ranges  integer;
    v_ledger_ranges  integer;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.kind <> 'PERIOD_END' OR v_run.status <> 'STARTED' THEN
        RAISE EXCEPTION 'batch % is a % batch, %; period-end pre-flight runs on a STARTED period-end',
                        p_batch_id, v_run.kind, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    -- The period's transitions and batches wait for this transaction.
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(v_run.period));
    SELECT ap.status, ap.end_date INTO v_period_status, v_end
      FROM gl.accounting_period AS ap WHERE ap.period = v_run.period FOR UPDATE;

    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'period_open',
                              v_period_status = 'OPEN', 'OPEN', v_period_status) THEN
        v_gate_errors := v_gate_errors || format('period %s is %s. %s', v_run.period,
                                                 v_period_status,
                                                 gl.period_posting_hint(v_run.period,
                                                                        v_period_status));
    END IF;
    SELECT u.rows INTO v_unposted FROM gl.period_unposted_rows(v_run.period) AS u;
    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'subledger_complete',
                              v_unposted = 0,
                              'every source row dated in the period posted or dead-lettered',
                              v_unposted || ' row(s) neither posted nor dead-lettered') THEN
        v_gate_errors := v_gate_errors
            || format('%s source row(s) dated in %s are neither posted nor dead-lettered: '
                      'post them first ("monthend run --period %s")', v_unposted,
                      v_run.period, v_run.period);
    END IF;
    SELECT c.minor_units INTO v_functional_mu
      FROM gl.setting AS s JOIN gl.currency AS c ON c.code = s.functional_currency;
    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'functional_currency',
                              v_functional_mu IS NOT NULL, 'gl.setting names a known currency',
                              coalesce('minor units ' || v_functional_mu, 'missing')) THEN
        v_gate_errors := v_gate_errors || 'gl.setting has no functional currency'::text;
    END IF;
    SELECT string_agg(x.role, ', ' ORDER BY x.role) INTO v_missing_accts
      FROM unnest(ARRAY['UPR', 'UPR_CHANGE', 'FX_GAIN', 'FX_LOSS']) AS x (role)
     WHERE NOT EXISTS (SELECT FROM gl.period_end_account AS a WHERE a.role = x.role);
    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'period_end_accounts',
                              v_missing_accts IS NULL,
                              'an account for every role of gl.period_end_account',
                              coalesce('missing ' || v_missing_accts, 'present')) THEN
        v_gate_errors := v_gate_errors
            || ('gl.period_end_account names no account for ' || v_missing_accts);
    END IF;
    PERFORM gl.ensure_period_partitions(v_run.period);
    PERFORM batch.record_check(p_batch_id, NULL, 'preflight', 'partitions_ready', true,
                               'month partitions of the ledger and claims', 'present');

    IF cardinality(v_gate_errors) > 0 THEN
        CALL batch.refuse_preflight(p_batch_id, v_gate_errors);
        RETURN;
    END IF;

    IF v_run.mode = 'DRAFT' THEN
        UPDATE batch.run AS r SET input_fingerprint = batch.draft_input_fingerprint(p_batch_id)
         WHERE r.batch_id = p_batch_id;
    END IF;

    -- The staging table of the batch's UPR detail, a partition of
    -- gl.upr_detail once the batch commits (its CHECK proves the bound).
    EXECUTE format('CREATE TABLE batch.%I (LIKE gl.upr_detail INCLUDING CONSTRAINTS, '
                   'CONSTRAINT %I CHECK (batch_id = %s), '
                   'CONSTRAINT %I PRIMARY KEY (policy_id, currency))',
                   'stage_upr_detail_' || p_batch_id,
                   'upr_detail_' || p_batch_id || '_batch_check', p_batch_id,
                   'upr_detail_' || p_batch_id || '_pkey');

    -- POLICY ranges: equal spans of the ids of the policies in force.
    SELECT count(*), min(p.policy_id), max(p.policy_id) INTO v_policies, v_lo, v_hi
      FROM subledger.policy AS p
     WHERE p.inception_date <= v_end AND p.expiry_date > v_end;
    INSERT INTO batch.range (batch_id, range_no, claim_period, source_type, lo_source_id,
                             hi_source_id, row_count, je_offset, je_count, stage)
    SELECT p_batch_id, s.k + 1, v_run.period, 'POLICY', v_lo + s.k * w.width,
           least(v_lo + (s.k + 1) * w.width - 1, v_hi), 0, 0, 0, 'PREFLIGHT'
    FROM (SELECT ((v_hi - v_lo) / ceil(v_policies::numeric / v_run.range_size)::bigint) + 1
                     AS width
          WHERE v_policies > 0) AS w
    CROSS JOIN LATERAL generate_series(0, (v_hi - v_lo) / w.width) AS s (k);
    GET DIAGNOSTICS v_policy_ranges = ROW_COUNT;

    -- LEDGER ranges: spans of about three entries a source row of range_size
    -- of every committed batch since the opening balances, as one statement
    -- sees them: the batches recorded in batch.run.ledger_batches, which the
    -- close check holds every later commit against.
    v_opening := batch.period_end_opening_period(v_run.period);
    SELECT coalesce(array_agg(b.batch_id ORDER BY b.batch_id), '{}') INTO v_ledger_batches
      FROM batch.run AS b
     WHERE b.status = 'COMMITTED' AND b.je_count > 0
       AND b.period <= v_run.period AND (v_opening IS NULL OR b.period > v_opening);
    INSERT INTO batch.range (batch_id, range_no, claim_period, source_type, lo_source_id,
                             hi_source_id, row_count, je_offset, je_count, stage,
                             ledger_batch_id)
    SELECT p_batch_id, v_policy_ranges + row_number() OVER (ORDER BY b.batch_id, s.lo),
           b.period, 'LEDGER', s.lo,
           least(s.lo + 3::bigint * v_run.range_size - 1, b.je_id_base + b.je_count - 1),
           0, 0, 0, 'PREFLIGHT', b.batch_id
    FROM batch.run AS b
    CROSS JOIN LATERAL generate_series(b.je_id_base, b.je_id_base + b.je_count - 1,
                                       3::bigint * v_run.range_size) AS s (lo)
    WHERE b.batch_id = ANY (v_ledger_batches);
    GET DIAGNOSTICS v_ledger_ranges = ROW_COUNT;

    UPDATE batch.run AS r
       SET status = 'PREFLIGHTING', dead_letter_rows = 0, opening_period = v_opening,
           ledger_batches = v_ledger_batches
     WHERE r.batch_id = p_batch_id;
    PERFORM batch.record_phase_time(p_batch_id, 'preflight', v_started);
    PERFORM batch.log_event(p_batch_id, 'PREFLIGHT_RANGES',
        format('pre-flight: %s policies in force at %s in %s ranges; the ledger since %s in %s ranges',
               v_policies, v_end, v_policy_ranges, coalesce(v_opening, 'the start'),
               v_ledger_ranges),
        jsonb_build_object('policies', v_policies, 'policy_ranges', v_policy_ranges,
                           'ledger_ranges', v_ledger_ranges, 'opening_period', v_opening));
END
$$;
