-- The FX revaluation of one period's monetary balances (IAS 21): one row per
-- monetary account and foreign currency with a balance at the period's end,
-- from batch.fx_revaluation_detail of the period's current period-end batch
-- (gl.period_end_batch(p_period)). Read only; rows in account, currency order.
--   balance, functional_carried  the balance in the currency, and the
--                        functional value it is carried at (the opening
--                        period's closing balance plus the movements since)
--   closing_rate         the period's gl.fx_closing_rate of the currency
--   functional_revalued  round(balance * closing_rate, functional minor units)
--   gain                 functional_revalued - functional_carried (a loss
--                        negative), in functional currency
--   je_number, booked    the revaluation's journal entry in the ledger, and
--                        what it moved the account by in functional currency
--                        (debits - credits); empty when the gain is 0 (no
--                        entry). booked_ok: the ledger holds the gain, no
--                        more, no less (no entry for a gain of 0)
--   reversal_batch_id, reversal_je_number, reversal_je_date  the committed
--                        reversal of the entry: the automatic reversal
--                        (AUTO_REVERSAL) on the first day of the next period
--   reversed             the entry is reversed by a committed batch (false
--                        while the next period's first run has not reversed
--                        it yet; empty when there is no entry)
--   period_end_batch_id  the batch the rows come from
-- A period without a committed period-end is refused, saying what to do
-- (gl.period_end_report_batch).
CREATE OR REPLACE FUNCTION gl.fx_revaluation_report(p_period text)
RETURNS TABLE (
    account_code        text,
    account_name        text,
    currency            char(3),
    balance             numeric,
    functional_carried  numeric,
    closing_rate        numeric,
    functional_revalued numeric,
    gain                numeric,
    je_number           text,
    booked              numeric,
    booked_ok           boolean,
    reversal_batch_id   bigint,
    reversal_je_number  text,
    reversal_je_date    date,
    reversed            boolean,
    period_end_batch_id bigint)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch    bigint;
    v_last_day date := (to_date(p_period, 'YYYY-MM') + interval '1 month - 1 day')::date;
BEGIN
    v_batch := gl.period_end_report_batch(p_period);

    RETURN QUERY
    SELECT d.account_code, a.name, d.currency, d.balance, d.functional_carried,
           d.closing_rate, d.functional_revalued, d.gain,
           e.je_number, e.booked,
           coalesce(e.booked, 0) = d.gain AND (e.je_id IS NOT NULL) = (d.gain <> 0),
           rv.batch_id, rv.je_number, rv.je_date,
           CASE WHEN e.je_id IS NOT NULL THEN rv.batch_id IS NOT NULL END,
           v_batch
    FROM batch.fx_revaluation_detail AS d
    LEFT JOIN gl.account AS a ON a.account_code = d.account_code
    -- The item that booked it: one at most (none for a gain of 0).
    LEFT JOIN batch.period_end_item AS i
           ON i.batch_id = v_batch AND i.item_kind = 'FX_REVALUATION'
          AND i.currency = d.currency
          AND d.account_code IN (i.debit_account, i.credit_account)
    -- Its entry, dated the period's last day, and its line on the account.
    LEFT JOIN LATERAL (
        SELECT h.je_id, h.je_number,
               sum(l.functional_debit - l.functional_credit) AS booked
        FROM gl.journal_entry_header AS h
        JOIN gl.journal_entry_line AS l
          ON l.je_id = h.je_id AND l.je_date = h.je_date AND l.batch_id = h.batch_id
         AND l.account_code = d.account_code
        WHERE h.batch_id = v_batch AND h.je_date = v_last_day
          AND h.source_type = 'FX_REVALUATION' AND h.source_id = i.item_id
        GROUP BY h.je_id, h.je_number
    ) AS e ON true
    -- Its committed reversal, and the reversing entry (dated in that batch's period).
    LEFT JOIN LATERAL (
        SELECT rb.batch_id, rh.je_number, rh.je_date
        FROM batch.source_reversal AS sr
        JOIN batch.run AS rb ON rb.batch_id = sr.batch_id AND rb.status = 'COMMITTED'
        LEFT JOIN gl.journal_entry_header AS rh
               ON rh.batch_id = rb.batch_id AND rh.reverses_je_id = e.je_id
              AND rh.je_date >= to_date(rb.period, 'YYYY-MM')
              AND rh.je_date < (to_date(rb.period, 'YYYY-MM') + interval '1 month')::date
        WHERE sr.period = p_period AND sr.source_type = 'FX_REVALUATION'
          AND sr.source_id = i.item_id
        ORDER BY rb.batch_id
        LIMIT 1
    ) AS rv ON true
    WHERE d.batch_id = v_batch
    ORDER BY d.account_code, d.currency;
END
$$;

GRANT EXECUTE ON FUNCTION gl.fx_revaluation_report(text) TO monthend_runner, monthend_auditor;
