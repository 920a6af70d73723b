-- The canonical text of a journal-entry line under seal version 2: what the
-- line says of itself. Its je_id, je_date and batch_id are its header's (the
-- keys the ledger repeats on every line to partition and index it); version 2
-- seals them once, in the header's text at the start of the entry's leaf
-- (audit.range_root), and audit.verify_batch checks that every line carries
-- its header's. Version 1 repeated them on every line
-- (audit.canonical_line_text), and formatting the date of every line was the
-- largest part of the cost of sealing it. Same fixed formats as version 1.
CREATE OR REPLACE FUNCTION audit.canonical_line_text_v2(
    p_line_no           integer,
    p_account_code      text,
    p_debit             numeric,
    p_credit            numeric,
    p_functional_debit  numeric,
    p_functional_credit numeric)
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
RETURN concat_ws('|', 'L', p_line_no, p_account_code, p_debit, p_credit, p_functional_debit,
                 p_functional_credit);

GRANT EXECUTE ON FUNCTION audit.canonical_line_text_v2(integer, text, numeric, numeric, numeric,
    numeric) TO monthend_runner, monthend_auditor;
