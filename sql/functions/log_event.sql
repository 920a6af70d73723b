-- Appends one event to a batch's timeline (batch.event), which the dashboard reads.
CREATE OR REPLACE FUNCTION batch.log_event(
    p_batch_id bigint,
    p_kind     text,
    p_message  text,
    p_detail   jsonb DEFAULT '{}',
    p_level    text DEFAULT 'INFO')
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO batch.event (batch_id, level, kind, message, detail)
    VALUES (p_batch_id, p_level, p_kind, p_message, p_detail);
END;
