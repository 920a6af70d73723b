-- The normative amounts-and-rounding rule, written once. For every source row
-- and every line of every template of its transaction type:
--   A_f            = round(A * rate(period, currency), minor_units(functional))
--   ratio line     = round(A * ratio, mu(currency)), round(A_f * ratio, mu(functional))
--   balancing line = whatever makes debits equal credits, in each currency.
-- Filters on source_type, source_id and txn_date are pushed below the window,
-- so a range or a single row is computed without touching the rest.
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
               f.fx_rate,
               f.amount_f,
               r.je_seq,
               r.line_no,
               r.account_code,
               r.side,
               r.ratio IS NULL                               AS is_balancing,
               round(s.amount * r.ratio, c.minor_units)      AS line_amount,
               round(f.amount_f * r.ratio, f.functional_mu)  AS line_amount_f
        FROM subledger.source_transaction AS s
        JOIN gl.currency AS c ON c.code = s.currency
        CROSS JOIN LATERAL (
            SELECT x.fx_rate,
                   round(s.amount * x.fx_rate, fc.minor_units) AS amount_f,
                   fc.minor_units                              AS functional_mu
            FROM gl.setting AS st
            JOIN gl.currency AS fc ON fc.code = st.functional_currency
            CROSS JOIN LATERAL (
                SELECT coalesce(
                           (SELECT fx.rate FROM gl.fx_rate AS fx
                            WHERE fx.period = to_char(s.txn_date, 'YYYY-MM')
                              AND fx.currency = s.currency),
                           CASE WHEN s.currency = st.functional_currency THEN 1::numeric END
                       ) AS fx_rate
            ) AS x
        ) AS f
        JOIN gl.posting_rule AS r
          ON r.source_type = s.source_type AND r.txn_type = s.txn_type
    ) AS a
) AS l
WINDOW w AS (PARTITION BY l.source_type, l.source_id, l.je_seq);

GRANT SELECT ON gl.journal_line_amount TO monthend_runner, monthend_auditor;
