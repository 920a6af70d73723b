-- The normative amounts-and-rounding rule, written once. For every source row
-- and every line of every template of its transaction type:
--   A_f            = round(A * rate(period, currency), minor_units(functional))
--                    (gl.functional_amount)
--   ratio line     = round(A * ratio, mu(currency)), round(A_f * ratio, mu(functional))
--   balancing line = whatever makes debits equal credits, in each currency.
-- Filters on source_type, source_id and txn_date are pushed below the window,
-- so a range or a single row is computed without touching the rest. The
-- functional currency is read by uncorrelated scalar subqueries (InitPlans,
-- once per statement), not joined: a join to the one-row setting table
-- costs a hash probe on every line. batch.process_range keeps the joins in
-- the order written below (join_collapse_limit = 1): currency and FX rate
-- per source row first, posting rules (the fan-out to lines) last.
CREATE OR REPLACE VIEW gl.journal_line_amount AS
SELECT l.source_type,
       l.source_id,
       l.txn_date,
       l.txn_type,
       l.currency,
       l.amount,
       l.fx_rate,
       l.amount_f,
       l.je_seq,
       l.line_no,
       l.account_code,
       l.side,
       l.is_balancing,
       CASE WHEN l.is_balancing
            THEN CASE l.side WHEN 'D' THEN -1 ELSE 1 END
                 * sum(l.signed_amount) OVER w
            ELSE l.line_amount END   AS line_amount,
       CASE WHEN l.is_balancing
            THEN CASE l.side WHEN 'D' THEN -1 ELSE 1 END
                 * sum(l.signed_amount_f) OVER w
            ELSE l.line_amount_f END AS line_amount_f
FROM (
    SELECT a.*,
           CASE a.side WHEN 'D' THEN a.line_amount ELSE -a.line_amount END     AS signed_amount,
           CASE a.side WHEN 'D' THEN a.line_amount_f ELSE -a.line_amount_f END AS signed_amount_f
    FROM (
        SELECT s.source_type,
               s.source_id,
               s.txn_date,
               s.txn_type,
               s.currency,
               s.amount,
               rate.fx_rate,
               x.amount_f,
               r.je_seq,
               r.line_no,
               r.account_code,
               r.side,
               r.ratio IS NULL                                AS is_balancing,
               round(s.amount * r.ratio, c.minor_units)       AS line_amount,
               -- The functional currency's minor units: an uncorrelated
               -- subquery, so an InitPlan evaluated once per statement.
               round(x.amount_f * r.ratio, (SELECT fc.minor_units FROM gl.setting AS st
                                            JOIN gl.currency AS fc
                                              ON fc.code = st.functional_currency))
                                                              AS line_amount_f
        FROM subledger.source_transaction AS s
        JOIN gl.currency AS c ON c.code = s.currency
        LEFT JOIN gl.fx_rate AS fx
               ON fx.period = to_char(s.txn_date, 'YYYY-MM') AND fx.currency = s.currency
        CROSS JOIN LATERAL (
            SELECT coalesce(fx.rate, CASE WHEN s.currency = (SELECT st.functional_currency
                                                            FROM gl.setting AS st)
                                          THEN 1::numeric END) AS fx_rate
        ) AS rate
        CROSS JOIN LATERAL (
            SELECT gl.functional_amount(s.amount, rate.fx_rate,
                                        (SELECT fc.minor_units FROM gl.setting AS st
                                         JOIN gl.currency AS fc
                                           ON fc.code = st.functional_currency)) AS amount_f
        ) AS x
        JOIN gl.posting_rule AS r
          ON r.source_type = s.source_type AND r.txn_type = s.txn_type
    ) AS a
) AS l
WINDOW w AS (PARTITION BY l.source_type, l.source_id, l.je_seq);

GRANT SELECT ON gl.journal_line_amount TO monthend_runner, monthend_auditor;
