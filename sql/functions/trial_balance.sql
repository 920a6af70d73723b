-- Trial balance of one period: the period's movements in the ledger, in
-- functional currency, and the checks that they balance. One row a row_kind:
--   ACCOUNT   every account of gl.account (and any account code the ledger
--             holds that the chart lacks, name empty): lines, total debits and
--             credits, balance = debits - credits; balanced is empty (an
--             account is not expected to balance on its own).
--   TOTAL     all accounts: balanced = total debits equal total credits.
--   BATCH     each committed batch of the period: its ledger lines balance,
--             and equal the functional totals its ranges recorded while the
--             run generated them (batch.range_total) - the ledger holds what
--             the run validated, no more, no less.
--   CURRENCY  each transaction currency, from those recorded range totals:
--             debits equal credits in the currency itself and in functional
--             currency. (Lines carry no currency; taking it from the headers
--             would join 90M lines to 30M headers at 10M source rows.)
-- A period that balances has balanced = true on every TOTAL, BATCH and
-- CURRENCY row; monthend report trial-balance exits 1 otherwise.
--
-- The ledger lines are read once, pruned to the period's month partitions,
-- and aggregated by (batch, account); every row kind is derived from that.
-- A closed period (one with a seal) is answered from what its close wrote
-- instead, without reading a line: ACCOUNT and TOTAL rows from its balances
-- (gl.period_balance), BATCH rows from the batches its seal covers
-- (gl.period_seal_batch). Its close checked both against the lines, so the
-- rows are the same either way; audit.verify_period checks they still are.
--
-- With p_batch_id, the trial balance of that one batch of the period, a
-- draft's included (read where it is: batch.batch_movement): its ACCOUNT
-- and TOTAL rows, its BATCH row against what its ranges recorded, and its
-- CURRENCY rows. A draft is reviewed this way before it is finalized.
CREATE OR REPLACE FUNCTION gl.trial_balance(p_period text, p_batch_id bigint DEFAULT NULL)
RETURNS TABLE (
    row_kind     text,
    account_code text,
    account_name text,
    account_type text,
    batch_id     bigint,
    currency     char(3),
    lines        bigint,
    debit        numeric,
    credit       numeric,
    balance      numeric,
    balanced     boolean,
    detail       text)
LANGUAGE sql
STABLE PARALLEL SAFE
AS $$
    WITH sealed AS (
        SELECT EXISTS (SELECT FROM gl.accounting_period AS ap
                       WHERE ap.period = p_period AND ap.seal_digest IS NOT NULL)
               AND p_batch_id IS NULL AS sealed
    ), movement AS MATERIALIZED (
        SELECT l.batch_id, l.account_code, count(*) AS lines,
               sum(l.functional_debit) AS debit, sum(l.functional_credit) AS credit
        FROM gl.journal_entry_line AS l
        WHERE l.je_date >= to_date(p_period, 'YYYY-MM')
          AND l.je_date < (to_date(p_period, 'YYYY-MM') + interval '1 month')::date
          -- A one-time filter: a sealed period's lines are not read at all.
          AND NOT (SELECT z.sealed FROM sealed AS z)
          AND p_batch_id IS NULL
        GROUP BY l.batch_id, l.account_code
        UNION ALL
        SELECT p_batch_id, m.account_code, sum(m.lines), sum(m.functional_debit),
               sum(m.functional_credit)
        FROM batch.batch_movement(p_batch_id) AS m
        WHERE p_batch_id IS NOT NULL
        GROUP BY m.account_code
    ), functional AS (
        SELECT st.functional_currency FROM gl.setting AS st
    ), per_account AS (
        SELECT m.account_code, sum(m.lines) AS lines, sum(m.debit) AS debit,
               sum(m.credit) AS credit
        FROM movement AS m GROUP BY m.account_code
        UNION ALL
        SELECT b.account_code, sum(b.lines), sum(b.functional_debit), sum(b.functional_credit)
        FROM gl.period_balance AS b
        WHERE b.period = p_period AND (SELECT z.sealed FROM sealed AS z)
        GROUP BY b.account_code
        HAVING sum(b.lines) > 0
    ), per_batch AS (
        SELECT m.batch_id, sum(m.lines) AS lines, sum(m.debit) AS debit,
               sum(m.credit) AS credit
        FROM movement AS m GROUP BY m.batch_id
        UNION ALL
        SELECT s.batch_id, s.lines, s.functional_debit, s.functional_credit
        FROM gl.period_seal_batch AS s
        WHERE s.period = p_period AND s.lines > 0 AND (SELECT z.sealed FROM sealed AS z)
    ), recorded AS (
        SELECT rg.batch_id, rt.currency, sum(rt.debit) AS debit, sum(rt.credit) AS credit,
               sum(rt.functional_debit) AS functional_debit,
               sum(rt.functional_credit) AS functional_credit
        FROM batch.run AS r
        JOIN batch.range AS rg ON rg.batch_id = r.batch_id
        JOIN batch.range_total AS rt ON rt.range_id = rg.range_id
        WHERE r.period = p_period
          AND (r.batch_id = p_batch_id OR p_batch_id IS NULL AND r.status = 'COMMITTED')
        GROUP BY rg.batch_id, rt.currency
    ), committed AS (
        SELECT r.batch_id, r.line_count,
               coalesce(sum(x.functional_debit), 0) AS debit,
               coalesce(sum(x.functional_credit), 0) AS credit
        FROM batch.run AS r
        LEFT JOIN recorded AS x ON x.batch_id = r.batch_id
        WHERE r.period = p_period
          AND (r.batch_id = p_batch_id OR p_batch_id IS NULL AND r.status = 'COMMITTED')
        GROUP BY r.batch_id, r.line_count
    ), report AS (
        SELECT 1 AS kind_order, 'ACCOUNT' AS row_kind,
               coalesce(a.account_code, m.account_code) AS account_code, a.name AS account_name,
               a.account_type, NULL::bigint AS batch_id,
               (SELECT f.functional_currency FROM functional AS f) AS currency,
               coalesce(m.lines, 0)::bigint AS lines, coalesce(m.debit, 0) AS debit,
               coalesce(m.credit, 0) AS credit,
               coalesce(m.debit, 0) - coalesce(m.credit, 0) AS balance,
               NULL::boolean AS balanced,
               CASE WHEN a.account_code IS NULL THEN 'account not in gl.account' END AS detail
        FROM gl.account AS a
        FULL JOIN per_account AS m ON m.account_code = a.account_code
        UNION ALL
        SELECT 2, 'TOTAL', NULL, NULL, NULL, NULL,
               (SELECT f.functional_currency FROM functional AS f),
               coalesce(sum(m.lines), 0)::bigint, coalesce(sum(m.debit), 0),
               coalesce(sum(m.credit), 0),
               coalesce(sum(m.debit), 0) - coalesce(sum(m.credit), 0),
               coalesce(sum(m.debit), 0) = coalesce(sum(m.credit), 0),
               CASE WHEN p_batch_id IS NULL
                    THEN format('%s lines of %s committed batch(es)', coalesce(sum(m.lines), 0),
                                (SELECT count(*) FROM committed))
                    ELSE format('%s lines of batch %s', coalesce(sum(m.lines), 0), p_batch_id)
               END
        FROM per_account AS m
        UNION ALL
        SELECT 3, 'BATCH', NULL, NULL, NULL, coalesce(c.batch_id, b.batch_id),
               (SELECT f.functional_currency FROM functional AS f),
               coalesce(b.lines, 0)::bigint, coalesce(b.debit, 0), coalesce(b.credit, 0),
               coalesce(b.debit, 0) - coalesce(b.credit, 0),
               c.batch_id IS NOT NULL
               AND coalesce(b.debit, 0) = coalesce(b.credit, 0)
               AND coalesce(b.debit, 0) = c.debit AND coalesce(b.credit, 0) = c.credit
               AND coalesce(b.lines, 0) = coalesce(c.line_count, 0),
               CASE WHEN c.batch_id IS NULL
                    THEN 'ledger lines of a batch that is not a committed batch of the period'
                         || CASE WHEN p_batch_id IS NOT NULL THEN ' (or not this batch)' ELSE '' END
                    ELSE format('run recorded %s lines, debits %s, credits %s',
                                coalesce(c.line_count, 0), c.debit, c.credit) END
        FROM committed AS c
        FULL JOIN per_batch AS b ON b.batch_id = c.batch_id
        UNION ALL
        SELECT 4, 'CURRENCY', NULL, NULL, NULL, NULL, x.currency, NULL,
               sum(x.debit), sum(x.credit), sum(x.debit) - sum(x.credit),
               sum(x.debit) = sum(x.credit)
               AND sum(x.functional_debit) = sum(x.functional_credit),
               format('functional debits %s, credits %s', sum(x.functional_debit),
                      sum(x.functional_credit))
        FROM recorded AS x
        GROUP BY x.currency
    )
    SELECT t.row_kind, t.account_code, t.account_name, t.account_type, t.batch_id, t.currency,
           t.lines, t.debit, t.credit, t.balance, t.balanced, t.detail
    FROM report AS t
    ORDER BY t.kind_order, t.account_code, t.batch_id, t.currency
$$;

GRANT EXECUTE ON FUNCTION gl.trial_balance(text, bigint) TO monthend_runner, monthend_auditor;
