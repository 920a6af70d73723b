-- The one definition of a period-end range's journal lines, as
-- batch.range_journal_line is a run's (same parameters, same columns): for
-- every item (batch.period_end_item) the batch claimed in
-- [p_lo_source_id, p_hi_source_id] of one source type (UPR or
-- FX_REVALUATION), one entry of two lines dated the period's last day: the
-- item's amounts debited to its debit account and credited to its credit
-- account, each side taking the part of either amount that is positive, so
-- that every line's amounts are not negative and the entry balances in both
-- currencies. The second line is the entry's balancing line (it takes what
-- the first gives). batch.process_range writes a period-end range from it.
CREATE OR REPLACE FUNCTION batch.range_period_end_line(
    p_batch_id       bigint,
    p_period         text,
    p_claim_period   text,
    p_source_type    text,
    p_lo_source_id   bigint,
    p_hi_source_id   bigint,
    p_je_id_base     bigint,
    p_je_number_base bigint,
    p_source_ids     bigint[] DEFAULT NULL)
RETURNS TABLE (
    source_type       text,
    source_id         bigint,
    txn_type          text,
    je_date           date,
    source_date       date,
    currency          char(3),
    source_amount     numeric,
    fx_rate           numeric,
    je_seq            integer,
    je_index          integer,
    line_no           integer,
    account_code      text,
    side              text,
    debit             numeric,
    credit            numeric,
    functional_debit  numeric,
    functional_credit numeric,
    description       text,
    template_lines    integer,
    is_first_line     boolean,
    je_id             bigint,
    je_no             bigint)
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT c.source_type, i.item_id, i.item_kind,
           (to_date(p_period, 'YYYY-MM') + interval '1 month' - interval '1 day')::date,
           NULL::date, i.currency, i.amount, i.fx_rate, 1, 0, s.line_no,
           CASE s.line_no WHEN 1 THEN i.debit_account ELSE i.credit_account END,
           CASE s.line_no WHEN 1 THEN 'D' ELSE 'C' END,
           greatest(s.sign * i.amount, 0), greatest(-s.sign * i.amount, 0),
           greatest(s.sign * i.functional_amount, 0), greatest(-s.sign * i.functional_amount, 0),
           i.description, 2, s.line_no = 1,
           p_je_id_base + c.je_offset,
           p_je_number_base + c.je_offset + 1
    FROM batch.source_claim AS c
    JOIN batch.period_end_item AS i ON i.item_id = c.source_id
    CROSS JOIN (VALUES (1, 1), (2, -1)) AS s (line_no, sign)
    WHERE c.period = p_claim_period AND c.batch_id = p_batch_id
      AND c.source_type = p_source_type
      AND c.source_id BETWEEN p_lo_source_id AND p_hi_source_id
      AND i.batch_id = p_batch_id AND i.item_kind = p_source_type
      AND (p_source_ids IS NULL OR c.source_id = ANY (p_source_ids))
$$;

