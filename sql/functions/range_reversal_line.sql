-- The one definition of a reversal range's journal lines, as
-- batch.range_journal_line is a run's: for every posting a reversal batch
-- reverses in [p_lo_source_id, p_hi_source_id] of one source type, each line of
-- each of the posting's entries, mirrored by the batch's method (side: debit
-- and credit swap; sign: both negated, in either currency), with the reversing
-- entry's place in the batch (je_id, je_no: the k-th entry of the posting is
-- mirrored by the k-th reversing entry) and the entry it reverses. A reversing
-- entry is dated as its original when both are in one period, else on the
-- first day of the reversal's period. The original rows are read from the
-- reversed batch's ledger partitions (batch_id is their partition key) within
-- the je_id span of the range's postings. batch.process_reversal_range writes a
-- range from it and audit.verify_batch checks a reversal against it.
CREATE OR REPLACE FUNCTION batch.range_reversal_line(
    p_batch_id       bigint,
    p_period         text,
    p_source_type    text,
    p_lo_source_id   bigint,
    p_hi_source_id   bigint,
    p_je_id_base     bigint,
    p_je_number_base bigint)
RETURNS TABLE (
    source_id         bigint,
    je_date           date,
    currency          char(3),
    source_amount     numeric,
    fx_rate           numeric,
    je_seq            integer,
    je_index          integer,
    line_no           integer,
    account_code      text,
    debit             numeric,
    credit            numeric,
    functional_debit  numeric,
    functional_credit numeric,
    description       text,
    is_first_line     boolean,
    je_id             bigint,
    je_no             bigint,
    reverses_je_id    bigint,
    reverses_je_number text)
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT x.source_id,
           CASE WHEN h.period = p_period THEN h.je_date ELSE to_date(p_period, 'YYYY-MM') END,
           h.currency, h.source_amount, h.fx_rate, h.je_seq, x.k, l.line_no, l.account_code,
           CASE x.method WHEN 'side' THEN l.credit ELSE -l.debit END,
           CASE x.method WHEN 'side' THEN l.debit ELSE -l.credit END,
           CASE x.method WHEN 'side' THEN l.functional_credit ELSE -l.functional_debit END,
           CASE x.method WHEN 'side' THEN l.functional_debit ELSE -l.functional_credit END,
           'Reversal of ' || h.je_number || ': ' || h.description,
           l.line_no = min(l.line_no) OVER (PARTITION BY h.je_id),
           p_je_id_base + x.je_offset + x.k,
           p_je_number_base + x.je_offset + x.k + 1,
           h.je_id, h.je_number
    FROM (
        SELECT r.source_id, r.je_offset, k.k, r.original_je_id + k.k AS original_je_id,
               rb.reversal_method AS method
        FROM batch.source_reversal AS r
        JOIN batch.run AS rb ON rb.batch_id = r.batch_id
        CROSS JOIN LATERAL generate_series(0, r.je_count - 1) AS k (k)
        WHERE r.batch_id = p_batch_id AND r.source_type = p_source_type
          AND r.source_id BETWEEN p_lo_source_id AND p_hi_source_id
    ) AS x
    JOIN gl.journal_entry_header AS h
      ON h.je_id = x.original_je_id AND h.source_type = p_source_type
     AND h.source_id = x.source_id
    JOIN gl.journal_entry_line AS l
      ON l.je_id = h.je_id AND l.je_date = h.je_date AND l.batch_id = h.batch_id
    -- The reversed batch's partitions only (pruned at run time), and within
    -- them the je_id span of the range's postings (index and BRIN ranges).
    WHERE h.batch_id = (SELECT b.reverses_batch_id FROM batch.run AS b
                        WHERE b.batch_id = p_batch_id)
      AND l.batch_id = (SELECT b.reverses_batch_id FROM batch.run AS b
                        WHERE b.batch_id = p_batch_id)
      AND h.je_id BETWEEN (SELECT min(r.original_je_id) FROM batch.source_reversal AS r
                           WHERE r.batch_id = p_batch_id AND r.source_type = p_source_type
                             AND r.source_id BETWEEN p_lo_source_id AND p_hi_source_id)
                      AND (SELECT max(r.original_je_id + r.je_count - 1)
                           FROM batch.source_reversal AS r
                           WHERE r.batch_id = p_batch_id AND r.source_type = p_source_type
                             AND r.source_id BETWEEN p_lo_source_id AND p_hi_source_id)
      AND l.je_id BETWEEN (SELECT min(r.original_je_id) FROM batch.source_reversal AS r
                           WHERE r.batch_id = p_batch_id AND r.source_type = p_source_type
                             AND r.source_id BETWEEN p_lo_source_id AND p_hi_source_id)
                      AND (SELECT max(r.original_je_id + r.je_count - 1)
                           FROM batch.source_reversal AS r
                           WHERE r.batch_id = p_batch_id AND r.source_type = p_source_type
                             AND r.source_id BETWEEN p_lo_source_id AND p_hi_source_id)
$$;
