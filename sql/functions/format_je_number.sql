-- The one definition of a journal entry's number: the period, a dash, and the
-- entry's place in the period's gapless sequence in ten digits
-- ('2025-01-0000000001'). A single-expression SQL function without SET or
-- STRICT, so the planner inlines it into the calling statement: no per-row
-- call (tests/test_je_number.py checks the plan). STABLE, not IMMUTABLE,
-- because to_char is.
CREATE OR REPLACE FUNCTION gl.format_je_number(p_period text, p_number bigint)
RETURNS text
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN p_period || '-' || to_char(p_number, 'FM0000000000');

GRANT EXECUTE ON FUNCTION gl.format_je_number(text, bigint)
    TO monthend_runner, monthend_auditor;
