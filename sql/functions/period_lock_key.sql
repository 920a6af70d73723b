-- The advisory-lock key of a period 'YYYY-MM': batch.lock_key('period', YYYYMM).
-- Pre-flight takes it exclusively; an upstream change to a source row takes it
-- shared, so a row cannot change between being classified and being claimed.
CREATE OR REPLACE FUNCTION batch.period_lock_key(p_period text)
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_period IS NULL OR p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' THEN
        RAISE EXCEPTION 'period % is not of the form YYYY-MM', coalesce(p_period, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN batch.lock_key('period', replace(p_period, '-', '')::bigint);
END
$$;
