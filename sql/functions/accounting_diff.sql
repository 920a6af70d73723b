-- Two accounting results compared per account and transaction currency, in
-- transaction and functional amounts: a batch or draft (p_batch_id) against
-- another batch or draft (p_against_batch_id), or against what a period
-- posted (p_against_period: every committed batch of it, gl.period_movement).
-- Exactly one of the two is given. Each side's net is debit - credit; change
-- is this side's net less the other's. Rows where both sides are equal in
-- both currencies are left out; sorted by the size of the functional change,
-- largest first. monthend diff prints it, with totals.
CREATE OR REPLACE FUNCTION batch.accounting_diff(p_batch_id bigint,
                                                 p_against_batch_id bigint DEFAULT NULL,
                                                 p_against_period text DEFAULT NULL)
RETURNS TABLE (
    account_code          text,
    account_name          text,
    currency              char(3),
    lines                 bigint,
    against_lines         bigint,
    net                   numeric,
    against_net           numeric,
    change                numeric,
    functional_net        numeric,
    against_functional_net numeric,
    functional_change     numeric)
LANGUAGE sql
STABLE
AS $$
    WITH mine AS (
        SELECT m.account_code, m.currency, sum(m.lines) AS lines,
               sum(m.debit - m.credit) AS net,
               sum(m.functional_debit - m.functional_credit) AS functional_net
        FROM batch.batch_movement(p_batch_id) AS m
        GROUP BY m.account_code, m.currency
    ), theirs AS (
        SELECT m.account_code, m.currency, sum(m.lines) AS lines,
               sum(m.debit - m.credit) AS net,
               sum(m.functional_debit - m.functional_credit) AS functional_net
        FROM batch.batch_movement(p_against_batch_id) AS m
        WHERE p_against_batch_id IS NOT NULL
        GROUP BY m.account_code, m.currency
        UNION ALL
        SELECT m.account_code, m.currency, sum(m.lines),
               sum(m.debit - m.credit), sum(m.functional_debit - m.functional_credit)
        FROM gl.period_movement(p_against_period) AS m
        WHERE p_against_period IS NOT NULL
        GROUP BY m.account_code, m.currency
    )
    SELECT coalesce(a.account_code, b.account_code), ac.name,
           coalesce(a.currency, b.currency),
           coalesce(a.lines, 0), coalesce(b.lines, 0),
           coalesce(a.net, 0), coalesce(b.net, 0), coalesce(a.net, 0) - coalesce(b.net, 0),
           coalesce(a.functional_net, 0), coalesce(b.functional_net, 0),
           coalesce(a.functional_net, 0) - coalesce(b.functional_net, 0)
    FROM mine AS a
    FULL JOIN theirs AS b ON b.account_code = a.account_code AND b.currency = a.currency
    LEFT JOIN gl.account AS ac ON ac.account_code = coalesce(a.account_code, b.account_code)
    WHERE coalesce(a.net, 0) <> coalesce(b.net, 0)
       OR coalesce(a.functional_net, 0) <> coalesce(b.functional_net, 0)
    ORDER BY abs(coalesce(a.functional_net, 0) - coalesce(b.functional_net, 0)) DESC,
             abs(coalesce(a.net, 0) - coalesce(b.net, 0)) DESC,
             1, 3
$$;

GRANT EXECUTE ON FUNCTION batch.accounting_diff(bigint, bigint, text)
    TO monthend_runner, monthend_auditor;
