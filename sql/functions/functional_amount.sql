-- Step 1 of the rounding rule: A_f = round(A * rate, minor units of the
-- functional currency), the rate being the period's gl.fx_rate of the
-- amount's currency (1 for the functional currency itself). The callers look
-- the rate and the minor units up once, in their own joins and InitPlans, and
-- pass them: the rounding view gl.journal_line_amount (a run's lines) and a
-- period-end's written premium in functional currency
-- (batch.compute_upr_range). A single-expression SQL function without
-- subqueries, so the planner inlines it: no call per row.
CREATE OR REPLACE FUNCTION gl.functional_amount(p_amount numeric, p_rate numeric,
                                                p_functional_minor_units integer)
RETURNS numeric
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN round(p_amount * p_rate, p_functional_minor_units);

GRANT EXECUTE ON FUNCTION gl.functional_amount(numeric, numeric, integer)
    TO monthend_runner, monthend_auditor;
