-- The one definition of a range's journal lines: every line the posting rules
-- give the source rows a batch claimed in [p_lo_source_id, p_hi_source_id] of
-- one source type in one claims partition (p_claim_period), with its amounts
-- (gl.journal_line_amount: the rounding rule), its entry's place in the batch
-- (je_id = p_je_id_base + the claim's je_offset + the template's je_index)
-- and its entry's number in the period's sequence (je_no;
-- gl.format_je_number makes the je_number of it).
-- An entry is dated on its source row's date; a late row (claimed in an
-- earlier period than the batch's own, p_period) is dated the first day of
-- the batch's period and keeps its own date as source_date. Late rows are
-- few and scattered over the ids, so a late range names its rows
-- (p_source_ids, batch.range_late_source_ids): an id list is a filter the
-- rounding view pushes below its window, where the bounds alone would have it
-- compute every row between them. NULL (every range of the batch's own
-- period) adds no filter: the planner drops it for the constant NULL.
-- batch.process_range writes a range from it and audit.verify_batch rebuilds a
-- range from it, so what is sealed and what is verified cannot drift apart.
-- A single-SELECT SQL function without SET or SECURITY DEFINER: the planner
-- inlines it into the caller's statement, which keeps the caller's planner
-- settings, and the bounds reach the scans as filters. Joins are written in
-- the order process_range needs them (see its join_collapse_limit).
CREATE OR REPLACE FUNCTION batch.range_journal_line(
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
    SELECT c.source_type, v.source_id, v.txn_type,
           CASE WHEN p_claim_period = p_period THEN v.txn_date
                ELSE to_date(p_period, 'YYYY-MM') END,
           CASE WHEN p_claim_period <> p_period THEN v.txn_date END,
           v.currency, v.amount,
           v.fx_rate, v.je_seq, t.je_index, v.line_no, v.account_code, v.side::text,
           CASE v.side WHEN 'D' THEN v.line_amount ELSE 0 END,
           CASE v.side WHEN 'C' THEN v.line_amount ELSE 0 END,
           CASE v.side WHEN 'D' THEN v.line_amount_f ELSE 0 END,
           CASE v.side WHEN 'C' THEN v.line_amount_f ELSE 0 END,
           t.description, t.line_count, v.line_no = t.first_line_no,
           p_je_id_base + c.je_offset + t.je_index,
           p_je_number_base + c.je_offset + t.je_index + 1
    FROM batch.source_claim AS c
    JOIN gl.journal_line_amount AS v
      ON v.source_type = c.source_type AND v.source_id = c.source_id
    JOIN gl.journal_template_index AS t
      ON t.source_type = v.source_type AND t.txn_type = v.txn_type AND t.je_seq = v.je_seq
    WHERE c.period = p_claim_period AND c.batch_id = p_batch_id
      AND c.source_type = p_source_type
      AND c.source_id BETWEEN p_lo_source_id AND p_hi_source_id
      AND v.source_type = p_source_type
      AND v.source_id BETWEEN p_lo_source_id AND p_hi_source_id
      AND (p_source_ids IS NULL OR v.source_id = ANY (p_source_ids))
$$;
