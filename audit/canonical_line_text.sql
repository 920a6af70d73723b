-- The canonical text of a journal-entry line; see audit.canonical_header_text.
CREATE OR REPLACE FUNCTION audit.canonical_line_text(
    p_je_id             bigint,
    p_je_date           date,
    p_line_no           integer,
    p_account_code      text,
    p_debit             numeric,
    p_credit            numeric,
    p_functional_debit  numeric,
    p_functional_credit numeric,
    p_batch_id          bigint)
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
RETURN concat_ws('|', 'L', p_je_id, to_char(p_je_date, 'YYYY-MM-DD'), p_line_no, p_account_code,
                 p_debit, p_credit, p_functional_debit, p_functional_credit, p_batch_id);

GRANT EXECUTE ON FUNCTION audit.canonical_line_text(bigint, date, integer, text, numeric,
    numeric, numeric, numeric, bigint) TO monthend_runner, monthend_auditor;
