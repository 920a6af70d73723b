-- The UPR of one range of a period-end's policies (a POLICY range, claimed by
-- this connection; batch.preflight_range hands it here), set-based in one
-- statement, into the batch's staging table batch.stage_upr_detail_<batch>.
-- For every policy of the range in force at the period's end E
-- (inception <= E < expiry), per currency of its premium:
--   W   written premium to date: its premium rows dated <= E with a live
--       posting by a committed batch, a cancellation negative;
--   W_f the same in the functional currency, each row at its own period's
--       rate (A_f of the rounding rule, gl.functional_amount);
--   T = expiry - inception, U = expiry - E (days);
--   UPR = round(W * U / T, minor units of the currency),
--   UPR_f = round(W_f * U / T, minor units of the functional currency).
-- A policy with no such premium has no row (its UPR is 0). The range is
-- then DONE, in the same transaction, with the number of rows it wrote.
CREATE OR REPLACE PROCEDURE batch.compute_upr_range(p_range_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- A range is ~10k policies and their premium rows: read by the policy index,
-- each row's claim found by its primary key, a probe a row. Called inside
-- batch.process_range, whose settings (no nested loops, joins in the order
-- written) are right for a run's ranges and wrong here: they would hash every
-- claim of the period for every range.
SET enable_nestloop = on
SET join_collapse_limit = 8
SET from_collapse_limit = 8
SET jit = off
AS $$
DECLARE
    v_range   batch.range%ROWTYPE;
    v_run     batch.run%ROWTYPE;
    v_end     date;
    v_started timestamptz := clock_timestamp();
    v_rows    bigint;
BEGIN
    SELECT * INTO STRICT v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id;
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = v_range.batch_id;
    SELECT ap.end_date INTO STRICT v_end
      FROM gl.accounting_period AS ap WHERE ap.period = v_run.period;

    EXECUTE format($q$
        INSERT INTO batch.%I (period, policy_id, line_of_business, currency, written_to_date,
                              written_to_date_functional, term_days, unexpired_days, upr,
                              upr_functional, batch_id)
        SELECT $1, w.policy_id, w.line_of_business, w.currency, w.written, w.written_f,
               w.term_days, w.unexpired_days,
               round(w.written * w.unexpired_days / w.term_days, c.minor_units),
               round(w.written_f * w.unexpired_days / w.term_days,
                     (SELECT fc.minor_units FROM gl.setting AS st
                      JOIN gl.currency AS fc ON fc.code = st.functional_currency)),
               $2
        FROM (
            SELECT p.policy_id, p.line_of_business, t.currency,
                   (p.expiry_date - p.inception_date) AS term_days,
                   (p.expiry_date - $3) AS unexpired_days,
                   sum(t.sign * t.amount) AS written,
                   sum(t.sign * gl.functional_amount(
                       t.amount, coalesce(fx.rate, CASE WHEN t.currency = st.functional_currency
                                                        THEN 1::numeric END),
                       (SELECT fc.minor_units FROM gl.setting AS s
                        JOIN gl.currency AS fc ON fc.code = s.functional_currency)))
                       AS written_f
            FROM subledger.policy AS p
            JOIN LATERAL (
                SELECT pt.amount, pt.currency, pt.payment_date,
                       CASE pt.txn_type WHEN 'CANCELLATION' THEN -1 ELSE 1 END AS sign
                FROM subledger.premium_transaction AS pt
                WHERE pt.policy_id = p.policy_id AND pt.payment_date <= $3
                  AND EXISTS (SELECT FROM batch.live_posting AS lp
                              JOIN batch.run AS b
                                ON b.batch_id = lp.batch_id AND b.status = 'COMMITTED'
                              WHERE lp.period = to_char(pt.payment_date, 'YYYY-MM')
                                AND lp.source_type = 'PREMIUM' AND lp.source_id = pt.txn_id)
            ) AS t ON true
            -- Each row at its own period's rate.
            LEFT JOIN gl.fx_rate AS fx
                   ON fx.period = to_char(t.payment_date, 'YYYY-MM') AND fx.currency = t.currency
            CROSS JOIN gl.setting AS st
            WHERE p.policy_id BETWEEN $4 AND $5
              AND p.inception_date <= $3 AND p.expiry_date > $3
            GROUP BY p.policy_id, p.line_of_business, t.currency, p.expiry_date,
                     p.inception_date
        ) AS w
        JOIN gl.currency AS c ON c.code = w.currency
        $q$, 'stage_upr_detail_' || v_run.batch_id)
    USING v_run.period, v_run.batch_id, v_end, v_range.lo_source_id, v_range.hi_source_id;
    GET DIAGNOSTICS v_rows = ROW_COUNT;

    CALL batch.complete_period_end_range(p_range_id, v_rows, v_started,
        format('policy range %s done: UPR of %s policy currencies', v_range.range_no, v_rows));
END
$$;
