-- Large-transaction report (the cash-reporting threshold) of one period.
-- Proves, for every source transaction dated in the period whose amount in
-- functional currency reaches p_threshold, what became of it: POSTED (its
-- entries' je_numbers, first..last and how many, read from the ledger headers
-- themselves; a row's numbers are consecutive by construction), PENDING
-- (claimed by a batch not committed yet), REVERSED (its latest posting is
-- reversed by a committed reversal, named as the batch; the numbers are the
-- reversed posting's), DEAD_LETTER (the reason of its open dead letter),
-- UNPOSTED (no run has taken it yet), or NOT_IN_LEDGER (claimed by a committed
-- batch yet without entries: an integrity problem).
--
-- Functional amount = round(amount * the period's gl.fx_rate, minor units of
-- the functional currency in gl.setting), the posting rule's own A_f, so the
-- report and the ledger agree to the cent on which side of the threshold a
-- row falls. The comparison is on the absolute value: a large negative amount
-- is dead-lettered, not posted, but is still a large movement to report.
-- A row whose amount cannot be converted (unknown currency, no rate for the
-- period) is listed too, with fx_rate and functional_amount empty: the
-- threshold cannot be ruled out for it.
--
-- The threshold is a parameter (default 10,000 functional units);
-- gl.high_value_transaction_report is the same report at 50,000.
--
-- Cost at 10M rows a period: the source tables are read once (date filter,
-- their date indexes when the tables hold other periods too), the period's
-- ledger headers once (pruned to its month partitions) and hashed against the
-- rows above the threshold only; min/max/count rather than an ordered array
-- keeps that a hash aggregate. A plain SQL function, so the planner inlines
-- it and can plan around the literal period.
--
-- With p_batch_id (a draft of the period), the draft's rows are shown as it
-- would post them: status DRAFT, with the numbers its entries carry in the
-- drafts' tables (batch.draft_journal_entry_header); without it a draft's
-- rows are PENDING like any batch's not committed yet.
CREATE OR REPLACE FUNCTION gl.large_transaction_report(
    p_period    text,
    p_threshold numeric DEFAULT 10000,
    p_batch_id  bigint DEFAULT NULL)
RETURNS TABLE (
    source_type         text,
    source_id           bigint,
    policy_id           bigint,
    txn_date            date,
    txn_type            text,
    line_of_business    text,
    amount              numeric,
    currency            char(3),
    fx_rate             numeric,
    functional_amount   numeric,
    functional_currency char(3),
    status              text,
    batch_id            bigint,
    first_je_number     text,
    last_je_number      text,
    entries             integer,
    dead_letter_reason  text,
    dead_letter_detail  text)
LANGUAGE sql
STABLE PARALLEL SAFE
AS $$
    WITH functional AS (
        -- gl.setting is a singleton; LIMIT 1 tells the planner so, which keeps
        -- its row estimates (and the plan) sane over millions of source rows.
        SELECT st.functional_currency, fc.minor_units
        FROM gl.setting AS st
        JOIN gl.currency AS fc ON fc.code = st.functional_currency
        LIMIT 1
    ), large AS (
        SELECT s.source_type, s.source_id, s.policy_id, s.txn_date, s.txn_type,
               s.line_of_business, s.amount, s.currency, x.fx_rate,
               round(s.amount * x.fx_rate, f.minor_units) AS functional_amount,
               f.functional_currency
        FROM subledger.source_transaction AS s
        CROSS JOIN functional AS f
        LEFT JOIN gl.fx_rate AS fx ON fx.period = p_period AND fx.currency = s.currency
        CROSS JOIN LATERAL (
            SELECT coalesce(fx.rate, CASE WHEN s.currency = f.functional_currency
                                          THEN 1::numeric END) AS fx_rate
        ) AS x
        WHERE s.txn_date >= to_date(p_period, 'YYYY-MM')
          AND s.txn_date < (to_date(p_period, 'YYYY-MM') + interval '1 month')::date
          AND s.amount <> 0
          AND (abs(round(s.amount * x.fx_rate, f.minor_units)) >= p_threshold
               OR x.fx_rate IS NULL)
    ), posted AS (
        -- Postings only (a reversing entry carries the row it reverses too),
        -- per posting batch: a row reversed and posted again has two.
        -- A late row of the period is posted by a later period's batch
        -- (one that lists this period in late_periods), its entries dated
        -- there and carrying the row's date as source_date.
        SELECT h.source_type, h.source_id, h.batch_id,
               min(h.je_number) AS first_je_number, max(h.je_number) AS last_je_number,
               count(*)::integer AS entries
        FROM (SELECT h.source_type, h.source_id, h.batch_id, h.je_number
              FROM gl.journal_entry_header AS h
              WHERE h.je_date >= to_date(p_period, 'YYYY-MM')
                AND h.je_date < (to_date(p_period, 'YYYY-MM') + interval '1 month')::date
                AND h.reverses_je_id IS NULL
              UNION ALL
              SELECT h.source_type, h.source_id, h.batch_id, h.je_number
              FROM gl.journal_entry_header AS h
              WHERE h.batch_id = ANY (ARRAY(SELECT r.batch_id FROM batch.run AS r
                                            WHERE p_period = ANY (r.late_periods)))
                AND h.source_date >= to_date(p_period, 'YYYY-MM')
                AND h.source_date < (to_date(p_period, 'YYYY-MM') + interval '1 month')::date
                AND h.reverses_je_id IS NULL
              UNION ALL
              SELECT h.source_type, h.source_id, h.batch_id, h.je_number
              FROM batch.draft_journal_entry_header AS h
              WHERE h.batch_id = p_batch_id) AS h
        WHERE (h.source_type, h.source_id) IN (SELECT l.source_type, l.source_id FROM large AS l)
        GROUP BY h.source_type, h.source_id, h.batch_id
    )
    SELECT l.source_type, l.source_id, l.policy_id, l.txn_date, l.txn_type, l.line_of_business,
           l.amount, l.currency, l.fx_rate, l.functional_amount, l.functional_currency,
           -- An archived period's claims are in its archive.
           CASE WHEN EXISTS (SELECT FROM gl.accounting_period AS ap
                             WHERE ap.period = p_period AND ap.status = 'ARCHIVED')
                THEN 'ARCHIVED'
                WHEN rv.batch_id IS NOT NULL THEN 'REVERSED'
                WHEN p.source_id IS NOT NULL AND r.status = 'DRAFT' THEN 'DRAFT'
                WHEN p.source_id IS NOT NULL THEN 'POSTED'
                WHEN r.status = 'COMMITTED' THEN 'NOT_IN_LEDGER'
                WHEN c.source_id IS NOT NULL THEN 'PENDING'
                WHEN d.source_id IS NOT NULL THEN 'DEAD_LETTER'
                ELSE 'UNPOSTED' END,
           coalesce(rv.batch_id, p.batch_id, c.batch_id, d.batch_id),
           p.first_je_number, p.last_je_number, p.entries,
           CASE WHEN p.source_id IS NULL AND c.source_id IS NULL THEN d.reason_code END,
           CASE WHEN p.source_id IS NULL AND c.source_id IS NULL THEN d.detail END
    FROM large AS l
    -- The row's latest posting (its highest generation), and the committed
    -- reversal of it, if any.
    LEFT JOIN LATERAL (
        SELECT c.* FROM batch.source_claim AS c
        WHERE c.period = p_period AND c.source_type = l.source_type
          AND c.source_id = l.source_id
        ORDER BY c.generation DESC LIMIT 1
    ) AS c ON true
    LEFT JOIN batch.run AS r ON r.batch_id = c.batch_id
    LEFT JOIN (SELECT sr.period, sr.source_type, sr.source_id, sr.generation, sr.batch_id
               FROM batch.source_reversal AS sr
               JOIN batch.run AS rb ON rb.batch_id = sr.batch_id AND rb.status = 'COMMITTED'
               WHERE sr.period = p_period) AS rv
           ON rv.period = c.period AND rv.source_type = c.source_type
          AND rv.source_id = c.source_id AND rv.generation = c.generation
    LEFT JOIN posted AS p
           ON p.source_type = l.source_type AND p.source_id = l.source_id
          AND p.batch_id = c.batch_id
    LEFT JOIN batch.dead_letter_current AS d
           ON d.source_type = l.source_type AND d.source_id = l.source_id
    ORDER BY l.txn_date, l.source_type, l.source_id
$$;

GRANT EXECUTE ON FUNCTION gl.large_transaction_report(text, numeric, bigint)
    TO monthend_runner, monthend_auditor;
