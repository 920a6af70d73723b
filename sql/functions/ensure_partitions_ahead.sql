-- Makes the ledger's partitions for every OPEN period and for p_months months
-- after the latest of them (after the current month when none is open), so a
-- run never pays for DDL at its start (gl.ensure_period_partitions, which a
-- run's pre-flight still calls, then finds them made). Idempotent; returns
-- the names it created. Schedule it (cron, pg_cron) or run `monthend
-- partitions ensure`.
CREATE OR REPLACE FUNCTION gl.ensure_partitions_ahead(p_months integer DEFAULT 3)
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_base   text;
    v_period text;
BEGIN
    IF p_months IS NULL OR p_months < 0 OR p_months > 120 THEN
        RAISE EXCEPTION 'months ahead must be 0 to 120, not %', coalesce(p_months::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.base_period INTO v_base FROM gl.premade_months() AS p;
    FOR v_period IN
        SELECT ap.period FROM gl.accounting_period AS ap WHERE ap.status = 'OPEN'
        UNION
        SELECT to_char(to_date(v_base, 'YYYY-MM') + make_interval(months => k), 'YYYY-MM')
        FROM generate_series(0, p_months) AS k
        ORDER BY 1
    LOOP
        RETURN QUERY SELECT * FROM gl.ensure_period_partitions(v_period);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION gl.ensure_partitions_ahead(integer) TO monthend_runner;
