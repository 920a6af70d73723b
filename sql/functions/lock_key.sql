-- The one definition of monthend's advisory-lock keys. Every advisory lock
-- monthend takes is pg_advisory_*(batch.lock_key(class, id)): one bigint,
-- passed whole. Its top 16 bits are 'mn' (0x6D6E), so monthend's locks stand
-- apart from other applications' in pg_locks; the next 8 bits name the class;
-- the low 40 bits carry the id (up to 1,099,511,627,775).
--   range_claim       a worker's session-level claim on a range (batch.claim_range)
--   period            a period's pre-flight against upstream changes and closing
--                     (batch.period_lock_key)
--   alert_evaluation  evaluators of one batch's alerts (batch.evaluate_alerts)
-- pg_locks shows a bigint key as classid = key >> 32, objid = key & 0xFFFFFFFF,
-- objsubid = 1 (batch.range_claim_held reads it so).
CREATE OR REPLACE FUNCTION batch.lock_key(p_class text, p_id bigint)
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_class_no bigint;
BEGIN
    v_class_no := CASE p_class
                      WHEN 'range_claim'      THEN 1
                      WHEN 'period'           THEN 2
                      WHEN 'alert_evaluation' THEN 3
                  END;
    IF v_class_no IS NULL THEN
        RAISE EXCEPTION 'unknown advisory lock class %', coalesce(quote_literal(p_class), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The classes are range_claim, period and alert_evaluation.';
    ELSIF p_id IS NULL OR p_id < 0 OR p_id >= (1::bigint << 40) THEN
        RAISE EXCEPTION 'advisory lock id % of class % is outside 0 .. 2^40 - 1',
                        coalesce(p_id::text, 'NULL'), p_class
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (x'6D6E'::bigint << 48) | (v_class_no << 40) | p_id;
END
$$;

-- The runner reads claims through batch.range_claim_held, which is not a definer.
GRANT EXECUTE ON FUNCTION batch.lock_key(text, bigint) TO monthend_runner;
