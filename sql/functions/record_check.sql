-- Records one check in batch.validation_result and returns whether it passed.
CREATE OR REPLACE FUNCTION batch.record_check(
    p_batch_id bigint,
    p_range_id bigint,
    p_phase    text,
    p_check    text,
    p_passed   boolean,
    p_expected text,
    p_actual   text)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO batch.validation_result (batch_id, range_id, phase, check_name, status,
                                         expected, actual)
    VALUES (p_batch_id, p_range_id, p_phase, p_check,
            CASE WHEN p_passed THEN 'PASS' ELSE 'FAIL' END, p_expected, p_actual);
    SELECT p_passed;
END;
