-- One number of batch.monitor_setting by name (NULL when the row is missing),
-- so the views read their targets from the table DBAs tune.
CREATE OR REPLACE FUNCTION batch.monitor_setting_value(p_name text)
RETURNS numeric
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT s.value FROM batch.monitor_setting AS s WHERE s.name = p_name;
END;

GRANT EXECUTE ON FUNCTION batch.monitor_setting_value(text) TO monthend_runner, monthend_auditor;
