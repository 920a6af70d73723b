-- The reversal register of one period: every reversing entry posted in it, with
-- the entry it reverses (number, batch, date), the reversal's reason, note,
-- method, who started it and when it was committed, and the reversing entry's
-- amounts in transaction and functional currency. Read only; one row an entry,
-- in je_number order.
CREATE OR REPLACE FUNCTION gl.reversal_register(p_period text)
RETURNS TABLE (
    reversal_batch_id   bigint,
    reversal_je_number  text,
    reversal_je_date    date,
    original_batch_id   bigint,
    original_je_number  text,
    original_je_date    date,
    source_type         text,
    source_id           bigint,
    je_seq              integer,
    reason              text,
    note                text,
    method              text,
    started_by          text,
    committed_at        timestamptz,
    currency            char(3),
    debit               numeric,
    credit              numeric,
    functional_debit    numeric,
    functional_credit   numeric)
LANGUAGE sql
STABLE
AS $$
    SELECT h.batch_id, h.je_number, h.je_date, o.batch_id, o.je_number, o.je_date,
           h.source_type, h.source_id, h.je_seq, r.reversal_reason, r.reversal_note,
           r.reversal_method, r.started_by, r.finished_at, h.currency,
           t.debit, t.credit, t.functional_debit, t.functional_credit
    FROM gl.journal_entry_header AS h
    JOIN batch.run AS r ON r.batch_id = h.batch_id
    -- The original is archived when its period is: the reversing entry is
    -- listed all the same, its original's columns empty.
    LEFT JOIN gl.journal_entry_header AS o
      ON o.batch_id = r.reverses_batch_id AND o.je_id = h.reverses_je_id
    CROSS JOIN LATERAL (
        SELECT sum(l.debit) AS debit, sum(l.credit) AS credit,
               sum(l.functional_debit) AS functional_debit,
               sum(l.functional_credit) AS functional_credit
        FROM gl.journal_entry_line AS l
        WHERE l.batch_id = h.batch_id AND l.je_id = h.je_id AND l.je_date = h.je_date
    ) AS t
    WHERE h.period = p_period AND h.reverses_je_id IS NOT NULL
      -- reversing entries are dated inside their period: the month's partitions only
      AND h.je_date >= to_date(p_period, 'YYYY-MM')
      AND h.je_date < (to_date(p_period, 'YYYY-MM') + interval '1 month')::date
    ORDER BY h.je_number
$$;

GRANT EXECUTE ON FUNCTION gl.reversal_register(text) TO monthend_runner, monthend_auditor;
