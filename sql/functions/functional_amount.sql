-- Step 1 of the rounding rule for one amount: A_f = round(A * rate(period,
-- currency), minor units of the functional currency), the rate being the
-- period's gl.fx_rate (1 for the functional currency itself); NULL when the
-- period has no rate for the currency. gl.journal_line_amount applies the
-- same formula with the rate joined once per source row (the run's hot path);
-- a period-end computes the written premium of its policies in functional
-- currency with this. Inlined by the planner (a single-expression SQL
-- function).
CREATE OR REPLACE FUNCTION gl.functional_amount(p_amount numeric, p_currency char(3),
                                                p_period text)
RETURNS numeric
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN round(p_amount * coalesce((SELECT fx.rate FROM gl.fx_rate AS fx
                                  WHERE fx.period = p_period AND fx.currency = p_currency),
                                 (SELECT 1::numeric FROM gl.setting AS st
                                  WHERE st.functional_currency = p_currency)),
             (SELECT fc.minor_units FROM gl.setting AS st
              JOIN gl.currency AS fc ON fc.code = st.functional_currency));

GRANT EXECUTE ON FUNCTION gl.functional_amount(numeric, char, text)
    TO monthend_runner, monthend_auditor;
