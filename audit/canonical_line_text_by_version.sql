-- A journal-entry line's canonical text under a batch's seal version: the one
-- place that says which text each version seals (audit.canonical_line_text
-- for 1, audit.canonical_line_text_v2 for 2). Every writer and verifier of a
-- seal calls it: process_range and process_reversal_range writing the range,
-- audit.ledger_entry_text and audit.verify_batch reading it back. A SQL
-- function of one expression, STABLE like the two it calls, so the planner
-- inlines it into their queries (no call per line).
CREATE OR REPLACE FUNCTION audit.canonical_line_text_by_version(
    p_seal_version      integer,
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
RETURN CASE p_seal_version
           WHEN 1 THEN audit.canonical_line_text(p_je_id, p_je_date, p_line_no, p_account_code,
                                                 p_debit, p_credit, p_functional_debit,
                                                 p_functional_credit, p_batch_id)
           ELSE audit.canonical_line_text_v2(p_line_no, p_account_code, p_debit, p_credit,
                                             p_functional_debit, p_functional_credit) END;

GRANT EXECUTE ON FUNCTION audit.canonical_line_text_by_version(integer, bigint, date, integer,
    text, numeric, numeric, numeric, numeric, bigint) TO monthend_runner, monthend_auditor;
