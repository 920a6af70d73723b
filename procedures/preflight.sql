-- Phase 1, pre-flight. Takes a STARTED batch. Gating checks first, before any
-- write: the period is OPEN, every posting template has exactly one balancing
-- line and at least one ratio line, the functional currency is configured,
-- the period's partitions exist. A failed gate marks the batch FAILED and
-- returns (its validation rows stay, nothing else is written).
-- Then, in one statement and so one snapshot, every unposted source row of the
-- period is classified: a bad row goes to batch.dead_letter with its reason,
-- a good row is claimed for the batch (batch.source_claim) with the offset of
-- its first journal entry, and control totals of the whole set are recorded.
-- Rows noted as strays (dated where no open period takes them) are
-- dead-lettered too, except, under gl.setting.late_row_policy
-- NEXT_OPEN_PERIOD, rows dated in a closed period: those wait for the first
-- open period after their own, and its run takes them with its own rows
-- (late rows: the noted strays and the open dead letters of such a period).
-- A late row is claimed in its own period's partition (the claim keys hold
-- whichever period posts it); its entries come after the period's own.
-- A draft (mode DRAFT) records the fingerprint of its inputs here
-- (batch.draft_input_fingerprint).
-- Leaves the batch PREFLIGHTED.
CREATE OR REPLACE PROCEDURE batch.preflight(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started        timestamptz := clock_timestamp();
    v_period         text;
    v_status         text;
    v_kind           text;
    v_period_status  text;
    v_start          date;
    v_end            date;
    v_numbers_used   bigint;
    v_functional_mu  integer;
    v_bad_templates  text;
    v_gate_errors    text[] := '{}'::text[];
    v_claimed        bigint;
    v_dead           bigint;
    v_stray_dead     bigint;
    v_je_count       bigint;
    v_missing_fx     text;
    v_reasons        jsonb;
    v_risky_premium  bigint[];
    v_risky_claim    bigint[];
    v_policy         text;
    v_claim_periods  text[];
    v_claim_period   text;
    v_offset_base    bigint := 0;
    v_period_claims  bigint;
    v_mode           text;
BEGIN
    SELECT r.period, r.status, r.kind, r.mode INTO v_period, v_status, v_kind, v_mode
      FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_status <> 'STARTED' THEN
        RAISE EXCEPTION 'batch % is %; pre-flight runs on a STARTED batch', p_batch_id, v_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF v_kind = 'REVERSAL' THEN
        CALL batch.preflight_reversal(p_batch_id);
        RETURN;
    END IF;

    -- Upstream changes to this period's rows wait for us (see
    -- subledger.source_refuse_change_when_claimed), and the period row lock
    -- keeps it from being closed under us.
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(v_period));
    SELECT ap.status, ap.start_date, ap.end_date, ap.je_numbers_used
      INTO v_period_status, v_start, v_end, v_numbers_used
      FROM gl.accounting_period AS ap WHERE ap.period = v_period FOR UPDATE;

    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'period_open',
                              v_period_status = 'OPEN', 'OPEN', v_period_status) THEN
        v_gate_errors := v_gate_errors || format('period %s is %s. %s', v_period,
                                                 v_period_status,
                                                 gl.period_posting_hint(v_period, v_period_status));
    END IF;

    SELECT string_agg(format('%s/%s/%s has %s balancing and %s ratio lines', t.source_type,
                             t.txn_type, t.je_seq, coalesce(t.balancing_lines, 0),
                             coalesce(t.ratio_lines, 0)), '; ')
      INTO v_bad_templates
      FROM gl.journal_template_index AS t
     WHERE t.balancing_lines IS DISTINCT FROM 1 OR coalesce(t.ratio_lines, 0) < 1;
    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'posting_rules_balance',
                              v_bad_templates IS NULL,
                              'one balancing line and >= 1 ratio line per template',
                              coalesce(v_bad_templates, 'all templates well formed')) THEN
        v_gate_errors := v_gate_errors || ('posting rules: ' || v_bad_templates);
    END IF;

    SELECT c.minor_units INTO v_functional_mu
      FROM gl.setting AS s JOIN gl.currency AS c ON c.code = s.functional_currency;
    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'functional_currency',
                              v_functional_mu IS NOT NULL, 'gl.setting names a known currency',
                              coalesce('minor units ' || v_functional_mu, 'missing')) THEN
        v_gate_errors := v_gate_errors || 'gl.setting has no functional currency'::text;
    END IF;

    PERFORM gl.ensure_period_partitions(v_period);
    PERFORM batch.record_check(p_batch_id, NULL, 'preflight', 'partitions_ready', true,
                               'month partitions of the ledger and claims', 'present');

    IF cardinality(v_gate_errors) > 0 THEN
        CALL batch.refuse_preflight(p_batch_id, v_gate_errors);
        RETURN;
    END IF;

    -- A draft records what it is built from before it reads any of it, so a
    -- change made while it is built is caught at finalize, never missed.
    IF v_mode = 'DRAFT' THEN
        UPDATE batch.run AS r SET input_fingerprint = batch.draft_input_fingerprint(p_batch_id)
         WHERE r.batch_id = p_batch_id;
    END IF;

    -- Late rows this run takes (batch.late_row_candidate). Their periods are
    -- locked first (after this one's: a closed period's lock is otherwise
    -- taken only by its own transitions and by reversals of its batches, which
    -- lock in period order from it), so upstream changes to them wait; the
    -- rows are read once the locks are held, and only those of the locked
    -- periods are taken (a row that moved meanwhile stays noted). A stray is
    -- deleted only once its row is taken.
    SELECT st.late_row_policy INTO v_policy FROM gl.setting AS st;
    SELECT v_period || coalesce(array_agg(x.claim_period ORDER BY x.claim_period), '{}')
      INTO v_claim_periods
      FROM (SELECT DISTINCT c.claim_period FROM batch.late_row_candidate(v_period) AS c) AS x;
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p.period))
       FROM unnest(v_claim_periods[2:]) AS p (period);
    PERFORM 'PRAGMA:TABLE: preflight_late_row (source_type text, source_id bigint, '
            'claim_period text)';
    CREATE TEMPORARY TABLE preflight_late_row ON COMMIT DROP AS
    SELECT c.source_type, c.source_id, c.claim_period
    FROM batch.late_row_candidate(v_period) AS c
    WHERE c.claim_period = ANY (v_claim_periods[2:]);
    SELECT v_period || coalesce(array_agg(x.claim_period ORDER BY x.claim_period), '{}')
      INTO v_claim_periods
      FROM (SELECT DISTINCT l.claim_period FROM preflight_late_row AS l) AS x;
    DELETE FROM subledger.stray_transaction AS st
     USING preflight_late_row AS l
     WHERE st.source_type = l.source_type AND st.source_id = l.source_id;

    -- Strays: dead-letter the noted rows that still have no open period (a
    -- closed period's wait for the next open one under NEXT_OPEN_PERIOD).
    WITH swept AS (
        DELETE FROM subledger.stray_transaction AS st
        WHERE v_policy = 'DEAD_LETTER'
           -- Under NEXT_OPEN_PERIOD a closed period's row waits, unless a live
           -- posting accounts for it already.
           OR NOT EXISTS (SELECT FROM subledger.source_transaction AS s
                          JOIN gl.accounting_period AS ap
                            ON s.txn_date BETWEEN ap.start_date AND ap.end_date
                          WHERE s.source_type = st.source_type AND s.source_id = st.source_id
                            AND ap.status IN ('CLOSED', 'PERMANENTLY_CLOSED')
                            AND NOT EXISTS (
                                SELECT FROM batch.live_posting AS lp
                                WHERE lp.period = ap.period AND lp.source_type = s.source_type
                                  AND lp.source_id = s.source_id))
        RETURNING st.source_type, st.source_id
    ), stray AS (
        SELECT s.source_type, s.source_id, s.amount, s.currency, s.txn_date, ap.status AS period_status
        FROM swept AS w
        JOIN subledger.source_transaction AS s
          ON s.source_type = w.source_type AND s.source_id = w.source_id
        LEFT JOIN gl.accounting_period AS ap ON s.txn_date BETWEEN ap.start_date AND ap.end_date
        -- A FUTURE period's rows wait for it to open: not strays.
        WHERE ap.status IS DISTINCT FROM 'OPEN' AND ap.status IS DISTINCT FROM 'FUTURE'
          -- A live posting (not reversed by a committed reversal) accounts
          -- for the row; a reversed one does not.
          AND NOT EXISTS (SELECT FROM batch.live_posting AS lp
                          WHERE lp.source_type = s.source_type AND lp.source_id = s.source_id)
    ), dead AS (
        INSERT INTO batch.dead_letter (source_type, source_id, batch_id, reason_code, detail,
                                       amount, currency)
        SELECT x.source_type, x.source_id, p_batch_id,
               CASE WHEN x.txn_date IS NULL THEN 'DATE_MISSING'
                    -- CLOSED, PERMANENTLY_CLOSED (late_row_policy DEAD_LETTER).
                    WHEN x.period_status IS NOT NULL THEN 'PERIOD_CLOSED'
                    ELSE 'DATE_OUTSIDE_PERIOD' END,
               CASE WHEN x.txn_date IS NULL THEN 'the transaction has no date'
                    WHEN x.period_status IS NOT NULL
                        THEN format('dated %s, in %s period %s', x.txn_date,
                                    replace(lower(x.period_status), '_', ' '),
                                    to_char(x.txn_date, 'YYYY-MM'))
                    ELSE format('dated %s, where no accounting period is defined', x.txn_date)
               END,
               x.amount, x.currency
        FROM stray AS x
        RETURNING source_type, currency, amount
    ), totals AS (
        INSERT INTO batch.control_total AS ct (batch_id, source_type, currency, source_rows,
                                              source_amount)
        SELECT p_batch_id, d.source_type, coalesce(d.currency, ''), count(*),
               coalesce(sum(d.amount), 0)
        FROM dead AS d
        GROUP BY d.source_type, coalesce(d.currency, '')
        RETURNING ct.source_rows
    )
    SELECT coalesce(sum(t.source_rows), 0)::bigint INTO v_stray_dead FROM totals AS t;

    -- The period's unposted rows and the late rows, read once (one snapshot)
    -- and classified.
    -- Everything below works from this set, so the control totals, the dead
    -- letters and the claims describe exactly the same rows.
    -- Shape of the scratch table below, for plpgsql_check (a no-op at run time).
    PERFORM 'PRAGMA:TABLE: preflight_candidate (source_type text, source_id bigint, '
            'policy_id bigint, txn_type text, amount numeric, currency char(3), '
            'line_of_business text, minor_units integer, known_lob boolean, '
            'template_count integer, fx_rate numeric, claim_period text, '
            'generation integer, reason text)';
    CREATE TEMPORARY TABLE preflight_candidate ON COMMIT DROP AS
    SELECT k.*, coalesce(g.generation, 0) AS generation,
           CASE WHEN k.policy_id IS NULL THEN 'POLICY_MISSING'
                WHEN k.amount IS NULL THEN 'AMOUNT_NULL'
                WHEN k.amount = 0 THEN 'AMOUNT_ZERO'
                WHEN k.amount < 0 THEN 'AMOUNT_NEGATIVE'
                WHEN k.minor_units IS NULL THEN 'CURRENCY_UNKNOWN'
                WHEN k.amount <> round(k.amount, k.minor_units) THEN 'AMOUNT_PRECISION'
                WHEN NOT k.known_lob THEN 'LINE_OF_BUSINESS_UNKNOWN'
                WHEN k.template_count IS NULL THEN 'TXN_TYPE_UNKNOWN'
                WHEN k.fx_rate IS NULL THEN 'FX_RATE_MISSING'
           END AS reason
    FROM (
        SELECT s.source_type, s.source_id, s.policy_id, s.txn_type, s.amount, s.currency,
               s.line_of_business, c.minor_units,
               lob.code IS NOT NULL AS known_lob,
               tt.template_count,
               coalesce(fx.rate, CASE WHEN s.currency = st.functional_currency
                                      THEN 1::numeric END) AS fx_rate,
               s.claim_period
        FROM (
            SELECT s.*, v_period AS claim_period
            FROM subledger.source_transaction AS s
            WHERE s.txn_date BETWEEN v_start AND v_end
              -- Unposted: never claimed, or every posting reversed by a
              -- committed reversal (then it is posted again, one generation on).
              AND NOT EXISTS (SELECT FROM batch.live_posting AS lp
                              WHERE lp.period = v_period AND lp.source_type = s.source_type
                                AND lp.source_id = s.source_id)
            UNION ALL
            -- Still dated in the period it was found in.
            SELECT s.*, l.claim_period
            FROM preflight_late_row AS l
            JOIN subledger.source_transaction AS s
              ON s.source_type = l.source_type AND s.source_id = l.source_id
            JOIN gl.accounting_period AS ap
              ON ap.period = l.claim_period AND s.txn_date BETWEEN ap.start_date AND ap.end_date
        ) AS s
        CROSS JOIN gl.setting AS st
        LEFT JOIN gl.currency AS c ON c.code = s.currency
        LEFT JOIN gl.line_of_business AS lob ON lob.code = s.line_of_business
        LEFT JOIN (SELECT DISTINCT t.source_type, t.txn_type, t.template_count
                   FROM gl.journal_template_index AS t) AS tt
               ON tt.source_type = s.source_type AND tt.txn_type = s.txn_type
        -- A row's FX rate is its own period's (the rounding rule's), a late
        -- row's included.
        LEFT JOIN gl.fx_rate AS fx ON fx.period = s.claim_period AND fx.currency = s.currency
    ) AS k
    LEFT JOIN (SELECT sr.period, sr.source_type, sr.source_id,
                      max(sr.generation) + 1 AS generation
               FROM batch.source_reversal AS sr
               WHERE sr.period = ANY (v_claim_periods)
               GROUP BY sr.period, sr.source_type, sr.source_id) AS g
           ON g.period = k.claim_period AND g.source_type = k.source_type
          AND g.source_id = k.source_id;
    -- A temporary table has no statistics until analyzed: planned as a few
    -- hundred rows, the join to the open dead letters below became a nested
    -- loop over every dead letter for every candidate (3.4 s for 100k rows
    -- and 1k dead letters, measured on a first batch).
    ANALYZE preflight_candidate;

    -- Only rows whose amount is small against a template's margin can round
    -- into a negative balancing line. Compute those exactly, with the rule's
    -- own view: an id list is a filter the view pushes below its window.
    -- Finding them is one comparison per row, amount < bound, against a bound
    -- computed once per source type, transaction type and currency (a few
    -- dozen rows): the largest over the type's entries of
    --   any amount                            when the margin is not positive,
    --   ratio_lines * unit / margin           (rounding in the currency),
    --   (ratio_lines + 1) * unit_f / (fx * margin)  (in functional currency),
    -- widened by 1% so that rounding in the division can only send more rows
    -- to the exact check, never fewer.
    WITH bound AS (
        SELECT t.source_type, t.txn_type, c.code AS currency,
               max(CASE WHEN t.margin <= 0 OR r.fx_rate <= 0 THEN 'Infinity'::numeric
                        ELSE 1.01 * greatest(
                            t.ratio_lines * power(10::numeric, -c.minor_units) / t.margin,
                            (t.ratio_lines + 1) * power(10::numeric, -v_functional_mu)
                                / (r.fx_rate * t.margin))
                   END) AS below
        FROM gl.journal_template_index AS t
        CROSS JOIN gl.currency AS c
        JOIN gl.setting AS st ON true
        LEFT JOIN gl.fx_rate AS fx ON fx.period = v_period AND fx.currency = c.code
        CROSS JOIN LATERAL (
            SELECT coalesce(fx.rate, CASE WHEN c.code = st.functional_currency
                                          THEN 1::numeric END) AS fx_rate
        ) AS r
        GROUP BY t.source_type, t.txn_type, c.code
    )
    SELECT coalesce(array_agg(k.source_id) FILTER (WHERE k.source_type = 'PREMIUM'), '{}'),
           coalesce(array_agg(k.source_id) FILTER (WHERE k.source_type = 'CLAIM'), '{}')
      INTO v_risky_premium, v_risky_claim
      FROM preflight_candidate AS k
      JOIN bound AS b
        ON b.source_type = k.source_type AND b.txn_type = k.txn_type
       AND b.currency = k.currency
     -- A late row's rate is its own period's, not the one the bound was
     -- computed with: late rows (few) are always checked exactly.
     WHERE k.reason IS NULL AND (k.amount < b.below OR k.claim_period <> v_period);

    UPDATE preflight_candidate AS k
       SET reason = 'BALANCING_NEGATIVE'
      FROM (SELECT v.source_type, v.source_id FROM gl.journal_line_amount AS v
             WHERE v.source_type = 'PREMIUM' AND v.source_id = ANY (v_risky_premium)
               AND v.is_balancing AND (v.line_amount < 0 OR v.line_amount_f < 0)
            UNION
            SELECT v.source_type, v.source_id FROM gl.journal_line_amount AS v
             WHERE v.source_type = 'CLAIM' AND v.source_id = ANY (v_risky_claim)
               AND v.is_balancing AND (v.line_amount < 0 OR v.line_amount_f < 0)) AS n
     WHERE k.source_type = n.source_type AND k.source_id = n.source_id;

    INSERT INTO batch.dead_letter (source_type, source_id, batch_id, reason_code, detail,
                                   amount, currency)
    SELECT f.source_type, f.source_id, p_batch_id, f.reason,
           CASE f.reason
               WHEN 'POLICY_MISSING' THEN 'policy_id is missing'
               WHEN 'AMOUNT_NULL' THEN 'amount is missing'
               WHEN 'AMOUNT_ZERO' THEN 'amount is zero'
               WHEN 'AMOUNT_NEGATIVE' THEN format('amount %s is negative', f.amount)
               WHEN 'CURRENCY_UNKNOWN'
                   THEN format('currency %s is not in gl.currency', coalesce(f.currency, 'NULL'))
               WHEN 'AMOUNT_PRECISION'
                   THEN format('amount %s has more decimals than %s allows (%s)',
                               f.amount, f.currency, f.minor_units)
               WHEN 'LINE_OF_BUSINESS_UNKNOWN'
                   THEN format('line of business %s is not in gl.line_of_business',
                               coalesce(f.line_of_business, 'NULL'))
               WHEN 'TXN_TYPE_UNKNOWN'
                   THEN format('no posting rules for %s transaction type %s',
                               f.source_type, coalesce(f.txn_type, 'NULL'))
               WHEN 'FX_RATE_MISSING'
                   THEN format('no FX rate for %s in period %s', f.currency, f.claim_period)
               WHEN 'BALANCING_NEGATIVE'
                   THEN format('amount %s %s gives a negative balancing line under the '
                               '%s rules', f.amount, f.currency, f.txn_type)
           END,
           f.amount, f.currency
    FROM preflight_candidate AS f
    WHERE f.reason IS NOT NULL;
    GET DIAGNOSTICS v_dead = ROW_COUNT;

    -- Straight into each claims partition (no tuple routing per row), in
    -- primary-key order (each index insert lands on the rightmost leaf); a
    -- ROWS frame, since (source_type, source_id) has no peers to look for.
    -- The period's own rows take the first entries, then the late rows of
    -- each earlier period in period order (one more pass, only when there
    -- are late rows).
    v_claimed := 0;
    FOREACH v_claim_period IN ARRAY v_claim_periods LOOP
        EXECUTE format($q$
            INSERT INTO batch.%I (period, source_type, source_id, generation, batch_id,
                                  je_offset)
            SELECT $1, f.source_type, f.source_id, f.generation, $2,
                   $3 + sum(f.template_count) OVER (ORDER BY f.source_type, f.source_id
                                                    ROWS UNBOUNDED PRECEDING)
                      - f.template_count
            FROM preflight_candidate AS f
            WHERE f.reason IS NULL AND f.claim_period = $1
            ORDER BY f.source_type, f.source_id
            $q$, 'source_claim_' || replace(v_claim_period, '-', '_'))
        USING v_claim_period, p_batch_id, v_offset_base;
        GET DIAGNOSTICS v_period_claims = ROW_COUNT;
        v_claimed := v_claimed + v_period_claims;
        IF v_claim_period <> v_claim_periods[cardinality(v_claim_periods)] THEN
            SELECT v_offset_base + coalesce(sum(f.template_count), 0) INTO v_offset_base
              FROM preflight_candidate AS f
             WHERE f.reason IS NULL AND f.claim_period = v_claim_period;
        END IF;
    END LOOP;

    -- Open dead letters of rows now claimed: the commit resolves these.
    INSERT INTO batch.dead_letter_resolution (batch_id, dead_letter_id)
    SELECT p_batch_id, d.dead_letter_id
    FROM preflight_candidate AS f
    JOIN batch.dead_letter AS d
      ON d.source_type = f.source_type AND d.source_id = f.source_id AND d.status = 'OPEN'
    WHERE f.reason IS NULL;

    INSERT INTO batch.control_total AS ct (batch_id, source_type, currency, source_rows,
                                          source_amount)
    SELECT p_batch_id, k.source_type, coalesce(k.currency, ''), count(*),
           coalesce(sum(k.amount), 0)
    FROM preflight_candidate AS k
    GROUP BY k.source_type, coalesce(k.currency, '')
    ON CONFLICT (batch_id, source_type, currency) DO UPDATE
       SET source_rows = ct.source_rows + excluded.source_rows,
           source_amount = ct.source_amount + excluded.source_amount;

    SELECT coalesce(sum(f.template_count) FILTER (WHERE f.reason IS NULL), 0),
           string_agg(DISTINCT f.currency, ', ') FILTER (WHERE f.reason = 'FX_RATE_MISSING')
      INTO v_je_count, v_missing_fx
      FROM preflight_candidate AS f;
    DROP TABLE preflight_candidate;

    PERFORM batch.record_check(p_batch_id, NULL, 'preflight', 'fx_rates_present',
                               v_missing_fx IS NULL, 'a rate for every currency in use',
                               coalesce('missing for ' || v_missing_fx
                                        || ' (rows dead-lettered FX_RATE_MISSING)',
                                        'all present'));

    SELECT coalesce(jsonb_object_agg(x.reason_code, x.n), '{}') INTO v_reasons
      FROM (SELECT d.reason_code, count(*) AS n FROM batch.dead_letter AS d
            WHERE d.batch_id = p_batch_id GROUP BY d.reason_code) AS x;

    UPDATE batch.run AS r
       SET status = 'PREFLIGHTED',
           claimed_rows = v_claimed,
           dead_letter_rows = v_dead + v_stray_dead,
           source_rows = (SELECT coalesce(sum(ct.source_rows), 0) FROM batch.control_total AS ct
                           WHERE ct.batch_id = p_batch_id),
           je_count = v_je_count,
           je_number_base = v_numbers_used,
           late_periods = v_claim_periods[2:]
     WHERE r.batch_id = p_batch_id;
    PERFORM batch.record_phase_time(p_batch_id, 'preflight', v_started);

    PERFORM batch.log_event(p_batch_id, 'PREFLIGHT_DONE',
        format('pre-flight: %s rows claimed, %s dead-lettered', v_claimed, v_dead + v_stray_dead)
        || CASE WHEN cardinality(v_claim_periods) > 1
                THEN format('; late rows of %s among them',
                            array_to_string(v_claim_periods[2:], ', ')) ELSE '' END,
        jsonb_build_object('claimed', v_claimed, 'dead_letters', v_reasons,
                           'late_periods', to_jsonb(v_claim_periods[2:])));
    PERFORM audit.append('PREFLIGHT_RESULT', jsonb_build_object(
        'batch_id', p_batch_id, 'passed', true, 'claimed', v_claimed,
        'dead_letters', v_reasons));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.preflight(bigint) TO monthend_runner;
