-- What one batch posts, or a draft would post, summed per account and
-- transaction currency (the header's): lines, and debits and credits in both
-- currencies. A committed batch is read from its ledger partitions, a draft
-- from the drafts' tables (batch.draft_journal_entry_*, see V017); the other
-- branch reads nothing (its partitions are pruned by batch_id). The
-- counterpart of gl.period_movement for one batch; monthend diff and the
-- trial balance of a draft read it.
CREATE OR REPLACE FUNCTION batch.batch_movement(p_batch_id bigint)
RETURNS TABLE (
    account_code      text,
    currency          char(3),
    lines             bigint,
    debit             numeric,
    credit            numeric,
    functional_debit  numeric,
    functional_credit numeric)
LANGUAGE sql
STABLE
-- Hash the headers instead of sorting both sides for a merge join (as
-- gl.period_movement).
SET enable_mergejoin = off
AS $$
    SELECT l.account_code, h.currency, count(*), sum(l.debit), sum(l.credit),
           sum(l.functional_debit), sum(l.functional_credit)
    FROM (SELECT l.je_id, l.account_code, l.debit, l.credit, l.functional_debit,
                 l.functional_credit
          FROM gl.journal_entry_line AS l WHERE l.batch_id = p_batch_id
          UNION ALL
          SELECT l.je_id, l.account_code, l.debit, l.credit, l.functional_debit,
                 l.functional_credit
          FROM batch.draft_journal_entry_line AS l WHERE l.batch_id = p_batch_id) AS l
    LEFT JOIN (SELECT h.je_id, h.currency FROM gl.journal_entry_header AS h
               WHERE h.batch_id = p_batch_id
               UNION ALL
               SELECT h.je_id, h.currency FROM batch.draft_journal_entry_header AS h
               WHERE h.batch_id = p_batch_id) AS h
           ON h.je_id = l.je_id
    GROUP BY l.account_code, h.currency
$$;

GRANT EXECUTE ON FUNCTION batch.batch_movement(bigint) TO monthend_runner, monthend_auditor;
