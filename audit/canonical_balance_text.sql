-- The canonical text of one balance row of a closed period (gl.period_balance)
-- as its seal hashes it: fixed field order, numbers as numeric's own text
-- (independent of locale). See audit.period_seal_digest.
CREATE OR REPLACE FUNCTION audit.canonical_balance_text(
    p_period             text,
    p_account_code       text,
    p_currency           text,
    p_lines              bigint,
    p_opening            numeric,
    p_debit              numeric,
    p_credit             numeric,
    p_closing            numeric,
    p_functional_opening numeric,
    p_functional_debit   numeric,
    p_functional_credit  numeric,
    p_functional_closing numeric)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
RETURN concat_ws('|', 'B', p_period, p_account_code, p_currency, p_lines, p_opening, p_debit,
                 p_credit, p_closing, p_functional_opening, p_functional_debit,
                 p_functional_credit, p_functional_closing);

GRANT EXECUTE ON FUNCTION audit.canonical_balance_text(text, text, text, bigint, numeric,
    numeric, numeric, numeric, numeric, numeric, numeric, numeric)
    TO monthend_runner, monthend_auditor;
