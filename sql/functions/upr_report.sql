-- The unearned premium reserve (UPR) of one period, and the premium it earned:
-- one row per line of business and currency, in the currency itself and in
-- functional currency. Read only; rows in line of business, currency order.
--   written         the written premium of the month: the period's ledger
--                   lines on the written-premium account (4050), credits -
--                   debits, of the entries of committed batches whose posting
--                   is live (batch.live_posting: not reversed by a committed
--                   reversal; a reversing entry is no posting of its own); the
--                   line of business is the policy's, as the UPR's
--   opening_upr     the UPR at the previous period-end: the sum of the
--                   gl.upr_detail of the latest earlier period that has a
--                   period-end (gl.period_end_batch), normally the previous
--                   period; 0 when there is none. The same rule as
--                   batch.cut_period_end_ranges
--   closing_upr     the sum of the gl.upr_detail of the period's current
--                   period-end batch (gl.period_end_batch(p_period))
--   upr_change      closing_upr - opening_upr
--   earned          written - upr_change
--   *_functional    the same in functional currency
--   booked_change   what the period-end batch booked as the change (its UPR
--                   item of the line of business and currency in
--                   batch.period_end_item; 0 when it booked none), in both
--                   currencies; booked_ok: it equals upr_change in both
--                   (false, e.g., when an earlier period-end was reversed and
--                   run again after this one)
--   policies        the policies with a UPR at the period's end
--   period_end_batch_id, opening_batch_id, opening_period  where the closing
--                   and opening UPR come from
-- A period without a committed period-end is refused, saying what to do
-- (gl.period_end_report_batch). The ledger is read once, pruned to the
-- month's partitions; the UPR detail of two batches, by partition.
CREATE OR REPLACE FUNCTION gl.upr_report(p_period text)
RETURNS TABLE (
    line_of_business         text,
    currency                 char(3),
    written                  numeric,
    opening_upr              numeric,
    closing_upr              numeric,
    upr_change               numeric,
    earned                   numeric,
    written_functional       numeric,
    opening_upr_functional   numeric,
    closing_upr_functional   numeric,
    upr_change_functional    numeric,
    earned_functional        numeric,
    booked_change            numeric,
    booked_change_functional numeric,
    booked_ok                boolean,
    policies                 bigint,
    period_end_batch_id      bigint,
    opening_batch_id         bigint,
    opening_period           text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch          bigint;
    v_opening_batch  bigint;
    v_opening_period text;
    v_start          date := to_date(p_period, 'YYYY-MM');
    v_end            date := (to_date(p_period, 'YYYY-MM') + interval '1 month')::date;
BEGIN
    v_batch := gl.period_end_report_batch(p_period);
    SELECT ap.period::text, gl.period_end_batch(ap.period) INTO v_opening_period, v_opening_batch
      FROM gl.accounting_period AS ap
     WHERE ap.period < p_period AND gl.period_end_batch(ap.period) IS NOT NULL
     ORDER BY ap.period DESC
     LIMIT 1;

    RETURN QUERY
    WITH written AS (
        SELECT coalesce(pol.line_of_business, pt.line_of_business) AS lob, h.currency AS cur,
               sum(l.credit - l.debit) AS amount,
               sum(l.functional_credit - l.functional_debit) AS amount_f
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h
          ON h.je_id = l.je_id AND h.je_date = l.je_date AND h.batch_id = l.batch_id
        JOIN batch.run AS r ON r.batch_id = h.batch_id AND r.status = 'COMMITTED'
        LEFT JOIN subledger.premium_transaction AS pt ON pt.txn_id = h.source_id
        LEFT JOIN subledger.policy AS pol ON pol.policy_id = pt.policy_id
        WHERE l.account_code = '4050'
          AND l.je_date >= v_start AND l.je_date < v_end
          AND h.je_date >= v_start AND h.je_date < v_end
          AND h.period = p_period AND h.source_type = 'PREMIUM'
          -- the claim of a late row stays in the period of its own date
          AND EXISTS (SELECT FROM batch.live_posting AS lp
                      WHERE lp.period = to_char(coalesce(h.source_date, h.je_date), 'YYYY-MM')
                        AND lp.source_type = h.source_type AND lp.source_id = h.source_id
                        AND lp.batch_id = h.batch_id)
        GROUP BY 1, 2
    ), closing AS (
        -- one row a policy and currency of its premium
        SELECT d.line_of_business AS lob, d.currency AS cur, sum(d.upr) AS upr,
               sum(d.upr_functional) AS upr_f, count(*) AS policies
        FROM gl.upr_detail AS d
        WHERE d.batch_id = v_batch
        GROUP BY 1, 2
    ), opening AS (
        SELECT d.line_of_business AS lob, d.currency AS cur, sum(d.upr) AS upr,
               sum(d.upr_functional) AS upr_f
        FROM gl.upr_detail AS d
        WHERE d.batch_id = v_opening_batch
        GROUP BY 1, 2
    ), booked AS (
        SELECT i.line_of_business AS lob, i.currency AS cur, sum(i.amount) AS amount,
               sum(i.functional_amount) AS amount_f
        FROM batch.period_end_item AS i
        WHERE i.batch_id = v_batch AND i.item_kind = 'UPR'
        GROUP BY 1, 2
    ), keys AS (
        SELECT w.lob, w.cur FROM written AS w
        UNION SELECT c.lob, c.cur FROM closing AS c
        UNION SELECT o.lob, o.cur FROM opening AS o
        UNION SELECT b.lob, b.cur FROM booked AS b
    )
    SELECT k.lob, k.cur,
           x.written, x.opening, x.closing, x.closing - x.opening,
           x.written - (x.closing - x.opening),
           x.written_f, x.opening_f, x.closing_f, x.closing_f - x.opening_f,
           x.written_f - (x.closing_f - x.opening_f),
           x.booked, x.booked_f,
           x.booked = x.closing - x.opening AND x.booked_f = x.closing_f - x.opening_f,
           coalesce(c.policies, 0),
           v_batch, v_opening_batch, v_opening_period
    FROM keys AS k
    LEFT JOIN written AS w ON w.lob = k.lob AND w.cur = k.cur
    LEFT JOIN closing AS c ON c.lob = k.lob AND c.cur = k.cur
    LEFT JOIN opening AS o ON o.lob = k.lob AND o.cur = k.cur
    LEFT JOIN booked AS b ON b.lob = k.lob AND b.cur = k.cur
    CROSS JOIN LATERAL (
        SELECT coalesce(w.amount, 0) AS written, coalesce(w.amount_f, 0) AS written_f,
               coalesce(o.upr, 0) AS opening, coalesce(o.upr_f, 0) AS opening_f,
               coalesce(c.upr, 0) AS closing, coalesce(c.upr_f, 0) AS closing_f,
               coalesce(b.amount, 0) AS booked, coalesce(b.amount_f, 0) AS booked_f
    ) AS x
    ORDER BY k.lob, k.cur;
END
$$;

GRANT EXECUTE ON FUNCTION gl.upr_report(text) TO monthend_runner, monthend_auditor;
