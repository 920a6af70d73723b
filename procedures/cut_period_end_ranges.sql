-- A period-end's items and ranges, from what its pre-flight ranges computed
-- (batch.compute_upr_range, batch.sum_ledger_range). Called by
-- batch.allocate_ranges, in its transaction, once every pre-flight range is
-- DONE.
--   UPR items, per line of business and currency: closing = the sum of the
--     batch's UPR detail, opening = the sum of the detail of the latest
--     earlier period-end (gl.period_end_batch of the latest earlier period
--     that has one, normally the previous period; 0 if none), in both
--     currencies; an item for a change: ΔUPR = closing - opening, debited to
--     the UPR_CHANGE account and credited to the UPR account (a decrease the
--     other way, batch.range_period_end_line).
--   FX revaluation, per monetary account and foreign currency: the balance at
--     the period's end = the opening period's closing balance
--     (batch.period_end_opening_period, gl.period_balance) + the movements
--     the LEDGER ranges summed, in both currencies; revalued =
--     round(balance * closing rate, minor units of the functional currency);
--     gain = revalued - the functional balance carried, debited to the
--     account and credited to FX_GAIN (a loss: FX_LOSS debited, the account
--     credited), in the functional currency only. Recorded in
--     batch.fx_revaluation_detail. A currency with a balance and no
--     gl.fx_closing_rate for the period stops the allocation, saying which.
-- Items get ids batch_id * 1,000,000 + their place (UPR items first, each kind
-- by its key), are claimed in batch.source_claim (one entry each) and cut into
-- ranges of range_size items per kind, numbered in id order, each claim's
-- offset counted from its range's first entry (claim_offset_base). The
-- pre-flight ranges are then removed (their counts stay in the
-- PREFLIGHT_DONE event), control totals recorded, and the batch's counts set.
CREATE OR REPLACE PROCEDURE batch.cut_period_end_ranges(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run           batch.run%ROWTYPE;
    v_end           date;
    v_functional    char(3);
    v_functional_mu integer;
    v_opening       text;
    v_previous_pe   bigint;
    v_no_rate       text;
    v_items         bigint;
    v_summary       jsonb;
BEGIN
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    SELECT ap.end_date INTO STRICT v_end FROM gl.accounting_period AS ap
     WHERE ap.period = v_run.period;
    SELECT st.functional_currency, c.minor_units INTO STRICT v_functional, v_functional_mu
      FROM gl.setting AS st JOIN gl.currency AS c ON c.code = st.functional_currency;
    -- The LEDGER ranges summed the batches after the opening period its
    -- pre-flight found: a close or reopen since moved it, and these sums with
    -- the balances of another period would count a month twice or not at all.
    v_opening := v_run.opening_period;
    IF batch.period_end_opening_period(v_run.period) IS DISTINCT FROM v_opening THEN
        RAISE EXCEPTION 'period-end batch % started from the balances of %, and the latest '
                        'closed period before % is now %', p_batch_id,
                        coalesce(v_opening, 'no closed period'), v_run.period,
                        coalesce(batch.period_end_opening_period(v_run.period), 'none')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('A period was closed or reopened meanwhile: cancel it '
                                '("monthend cancel %s") and run the period-end again.',
                                p_batch_id);
    END IF;
    SELECT gl.period_end_batch(ap.period) INTO v_previous_pe
      FROM gl.accounting_period AS ap
     WHERE ap.period < v_run.period AND gl.period_end_batch(ap.period) IS NOT NULL
     ORDER BY ap.period DESC
     LIMIT 1;

    -- The monetary balances at the period's end, and their revaluation.
    PERFORM 'PRAGMA:TABLE: fx_balance (account_code text, currency char(3), balance numeric, '
            'functional_carried numeric, closing_rate numeric)';
    CREATE TEMPORARY TABLE fx_balance ON COMMIT DROP AS
    SELECT x.account_code, x.currency, sum(x.balance) AS balance,
           sum(x.functional) AS functional_carried, cr.rate AS closing_rate
    FROM (
        SELECT pb.account_code, pb.currency, pb.closing AS balance,
               pb.functional_closing AS functional
        FROM gl.period_balance AS pb
        JOIN gl.account AS a ON a.account_code = pb.account_code AND a.is_monetary
        WHERE pb.period = v_opening AND pb.currency <> v_functional
        UNION ALL
        SELECT m.account_code, m.currency, m.debit - m.credit,
               m.functional_debit - m.functional_credit
        FROM batch.fx_movement_part AS m
        JOIN batch.range AS rg ON rg.range_id = m.range_id
        WHERE rg.batch_id = p_batch_id AND rg.source_type = 'LEDGER'
    ) AS x
    LEFT JOIN gl.fx_closing_rate AS cr ON cr.period = v_run.period AND cr.currency = x.currency
    GROUP BY x.account_code, x.currency, cr.rate
    HAVING sum(x.balance) <> 0 OR sum(x.functional) <> 0;

    SELECT string_agg(DISTINCT b.currency, ', ' ORDER BY b.currency) INTO v_no_rate
      FROM fx_balance AS b WHERE b.closing_rate IS NULL;
    IF NOT batch.record_check(p_batch_id, NULL, 'allocation', 'fx_closing_rates_present',
                              v_no_rate IS NULL,
                              'a closing rate for every currency with a monetary balance',
                              coalesce('missing for ' || v_no_rate, 'all present')) THEN
        RAISE EXCEPTION 'period % has monetary balances in % and no closing rate for them',
                        v_run.period, v_no_rate
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Insert them into gl.fx_closing_rate (period %s), then '
                                '"monthend resume %s".', v_run.period, p_batch_id);
    END IF;

    INSERT INTO batch.fx_revaluation_detail (batch_id, account_code, currency, balance,
                                             functional_carried, closing_rate,
                                             functional_revalued, gain)
    SELECT p_batch_id, b.account_code, b.currency, b.balance, b.functional_carried,
           b.closing_rate, v.revalued, v.revalued - b.functional_carried
    FROM fx_balance AS b
    CROSS JOIN LATERAL (SELECT round(b.balance * b.closing_rate, v_functional_mu) AS revalued)
        AS v;

    -- The items, UPR first, each kind in its key's order.
    EXECUTE format($q$
        INSERT INTO batch.period_end_item (item_id, batch_id, item_kind, line_of_business,
                                           currency, debit_account, credit_account, amount,
                                           functional_amount, fx_rate, description, basis)
        SELECT $1 * 1000000 + row_number() OVER (ORDER BY x.kind_order, x.key, x.currency),
               $1, x.item_kind, x.line_of_business, x.currency, x.debit_account,
               x.credit_account, x.amount, x.functional_amount, x.fx_rate, x.description,
               x.basis
        FROM (
            SELECT 1 AS kind_order, u.line_of_business AS key, 'UPR' AS item_kind,
                   u.line_of_business, u.currency,
                   (SELECT a.account_code FROM gl.period_end_account AS a
                     WHERE a.role = 'UPR_CHANGE') AS debit_account,
                   (SELECT a.account_code FROM gl.period_end_account AS a
                     WHERE a.role = 'UPR') AS credit_account,
                   u.closing - u.opening AS amount,
                   u.closing_f - u.opening_f AS functional_amount,
                   coalesce((SELECT fx.rate FROM gl.fx_rate AS fx
                              WHERE fx.period = $2 AND fx.currency = u.currency),
                            CASE WHEN u.currency = $3 THEN 1::numeric END,
                            CASE WHEN u.closing - u.opening <> 0
                                 THEN abs((u.closing_f - u.opening_f)
                                          / (u.closing - u.opening)) END,
                            1::numeric) AS fx_rate,
                   format('Change in unearned premium reserve, %%s %%s: %%s to %%s',
                          u.line_of_business, u.currency, u.opening, u.closing) AS description,
                   jsonb_build_object('opening', u.opening, 'closing', u.closing,
                                      'opening_functional', u.opening_f,
                                      'closing_functional', u.closing_f,
                                      'opening_batch', $4::bigint) AS basis
            FROM (
                SELECT coalesce(c.line_of_business, o.line_of_business) AS line_of_business,
                       coalesce(c.currency, o.currency) AS currency,
                       coalesce(c.upr, 0) AS closing, coalesce(c.upr_f, 0) AS closing_f,
                       coalesce(o.upr, 0) AS opening, coalesce(o.upr_f, 0) AS opening_f
                FROM (SELECT d.line_of_business, d.currency, sum(d.upr) AS upr,
                             sum(d.upr_functional) AS upr_f
                      FROM batch.%I AS d GROUP BY d.line_of_business, d.currency) AS c
                FULL JOIN (SELECT d.line_of_business, d.currency, sum(d.upr) AS upr,
                                  sum(d.upr_functional) AS upr_f
                           FROM gl.upr_detail AS d WHERE d.batch_id = $4
                           GROUP BY d.line_of_business, d.currency) AS o
                       ON o.line_of_business = c.line_of_business AND o.currency = c.currency
            ) AS u
            WHERE u.closing <> u.opening OR u.closing_f <> u.opening_f
            UNION ALL
            SELECT 2, f.account_code, 'FX_REVALUATION', NULL, f.currency,
                   CASE WHEN f.gain > 0 THEN f.account_code
                        ELSE (SELECT a.account_code FROM gl.period_end_account AS a
                               WHERE a.role = 'FX_LOSS') END,
                   CASE WHEN f.gain > 0 THEN (SELECT a.account_code FROM gl.period_end_account AS a
                                               WHERE a.role = 'FX_GAIN')
                        ELSE f.account_code END,
                   0, abs(f.gain), f.closing_rate,
                   format('FX revaluation of %%s %%s %%s at %%s: %%s carried, %%s revalued',
                          f.account_code, f.balance, f.currency, f.closing_rate,
                          f.functional_carried, f.functional_revalued),
                   jsonb_build_object('balance', f.balance,
                                      'functional_carried', f.functional_carried,
                                      'closing_rate', f.closing_rate,
                                      'functional_revalued', f.functional_revalued,
                                      'gain', f.gain)
            FROM batch.fx_revaluation_detail AS f
            WHERE f.batch_id = $1 AND f.gain <> 0
        ) AS x
        $q$, 'stage_upr_detail_' || p_batch_id)
    USING p_batch_id, v_run.period, v_functional, v_previous_pe;
    GET DIAGNOSTICS v_items = ROW_COUNT;
    IF v_items >= 1000000 THEN
        RAISE EXCEPTION 'period-end batch % has % items; at most 999,999 are numbered',
                        p_batch_id, v_items
            USING ERRCODE = 'program_limit_exceeded';
    END IF;

    SELECT jsonb_build_object(
               'policy_ranges', count(*) FILTER (WHERE rg.source_type = 'POLICY'),
               'upr_rows', coalesce(sum(rg.row_count) FILTER (WHERE rg.source_type = 'POLICY'), 0),
               'ledger_ranges', count(*) FILTER (WHERE rg.source_type = 'LEDGER'),
               'opening_period', v_opening, 'opening_upr_batch', v_previous_pe,
               'upr_items', (SELECT count(*) FROM batch.period_end_item AS i
                             WHERE i.batch_id = p_batch_id AND i.item_kind = 'UPR'),
               'fx_items', (SELECT count(*) FROM batch.period_end_item AS i
                            WHERE i.batch_id = p_batch_id AND i.item_kind = 'FX_REVALUATION'))
      INTO v_summary
      FROM batch.range AS rg WHERE rg.batch_id = p_batch_id;
    DELETE FROM batch.fx_movement_part AS m
     USING batch.range AS rg
     WHERE rg.range_id = m.range_id AND rg.batch_id = p_batch_id;
    DELETE FROM batch.range AS rg WHERE rg.batch_id = p_batch_id;

    -- Ranges of range_size items per kind, then each item's claim, its
    -- offset counted from its range's first entry.
    INSERT INTO batch.range (batch_id, range_no, claim_period, source_type, lo_source_id,
                             hi_source_id, row_count, je_offset, je_count, stage,
                             claim_offset_base)
    SELECT p_batch_id, row_number() OVER (ORDER BY g.lo), v_run.period, g.item_kind, g.lo, g.hi,
           g.n, g.first_offset, g.n, 'PROCESS', g.first_offset
    FROM (SELECT k.item_kind, min(k.item_id) AS lo, max(k.item_id) AS hi, count(*) AS n,
                 min(k.place) - 1 AS first_offset
          FROM (SELECT i.item_kind, i.item_id,
                       row_number() OVER (ORDER BY i.item_id) AS place,
                       (row_number() OVER (PARTITION BY i.item_kind ORDER BY i.item_id) - 1)
                           / v_run.range_size AS bucket
                FROM batch.period_end_item AS i WHERE i.batch_id = p_batch_id) AS k
          GROUP BY k.item_kind, k.bucket) AS g;
    INSERT INTO batch.source_claim (period, source_type, source_id, generation, batch_id,
                                    je_offset)
    SELECT v_run.period, i.item_kind, i.item_id, 0, p_batch_id,
           row_number() OVER (PARTITION BY rg.range_id ORDER BY i.item_id) - 1
    FROM batch.period_end_item AS i
    JOIN batch.range AS rg
      ON rg.batch_id = p_batch_id AND rg.source_type = i.item_kind
     AND i.item_id BETWEEN rg.lo_source_id AND rg.hi_source_id
    WHERE i.batch_id = p_batch_id;

    INSERT INTO batch.control_total (batch_id, source_type, currency, source_rows, source_amount)
    SELECT p_batch_id, i.item_kind, i.currency, count(*), sum(i.amount)
    FROM batch.period_end_item AS i WHERE i.batch_id = p_batch_id
    GROUP BY i.item_kind, i.currency;

    UPDATE batch.run AS r
       SET claimed_rows = v_items, source_rows = v_items, je_count = v_items,
           dead_letter_rows = 0,
           je_number_base = (SELECT ap.je_numbers_used FROM gl.accounting_period AS ap
                              WHERE ap.period = r.period)
     WHERE r.batch_id = p_batch_id;
    PERFORM batch.log_event(p_batch_id, 'PREFLIGHT_DONE',
        format('pre-flight: %s UPR changes and %s FX revaluations to book',
               v_summary ->> 'upr_items', v_summary ->> 'fx_items'),
        v_summary);
    PERFORM audit.append('PREFLIGHT_RESULT', jsonb_build_object(
        'batch_id', p_batch_id, 'passed', true, 'claimed', v_items, 'kind', 'PERIOD_END')
        || v_summary);
    DROP TABLE fx_balance;
END
$$;
