-- A period's movements, read from its ledger lines: per batch, account and
-- transaction currency (the header's; NULL for a line without its header),
-- lines and debits and credits in both currencies. The one definition of
-- what a period posted, summed: the closing checks, the balances a close
-- writes and audit.verify_period all read it. Reads the period's month
-- partitions only; the header side is bounded by the same dates so that it
-- is pruned too. The bounds are computed once (scalar subqueries), not per
-- line as to_date() in the filter would be (measured at 1.8M lines: the scan
-- 1.0 s -> 0.3 s).
CREATE OR REPLACE FUNCTION gl.period_movement(p_period text)
RETURNS TABLE (
    batch_id          bigint,
    account_code      text,
    currency          char(3),
    lines             bigint,
    debit             numeric,
    credit            numeric,
    functional_debit  numeric,
    functional_credit numeric)
LANGUAGE sql
STABLE
-- Hash the headers instead of sorting both sides for a merge join (1.8M
-- lines, 600k headers: 3.3 s -> 2.4 s).
SET enable_mergejoin = off
AS $$
    SELECT l.batch_id, l.account_code, h.currency, count(*), sum(l.debit), sum(l.credit),
           sum(l.functional_debit), sum(l.functional_credit)
    FROM gl.journal_entry_line AS l
    LEFT JOIN gl.journal_entry_header AS h
           ON h.je_id = l.je_id AND h.je_date = l.je_date AND h.batch_id = l.batch_id
          AND h.je_date >= (SELECT to_date(p_period, 'YYYY-MM'))
          AND h.je_date < (SELECT (to_date(p_period, 'YYYY-MM') + interval '1 month')::date)
    WHERE l.je_date >= (SELECT to_date(p_period, 'YYYY-MM'))
      AND l.je_date < (SELECT (to_date(p_period, 'YYYY-MM') + interval '1 month')::date)
    GROUP BY l.batch_id, l.account_code, h.currency
$$;
