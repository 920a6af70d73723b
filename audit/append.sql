-- Appends one event to the audit chain and returns its sequence number.
-- The payload's batch_id, when present, is also stored in its own column.
CREATE OR REPLACE FUNCTION audit.append(p_event text, p_payload jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seq bigint;
BEGIN
    INSERT INTO audit.log (seq, at, event, batch_id, payload, actor, prev_hash, hash)
    VALUES (0, clock_timestamp(), p_event, (p_payload ->> 'batch_id')::bigint, p_payload,
            session_user, '\x'::bytea, '\x'::bytea)
    RETURNING seq INTO v_seq;
    RETURN v_seq;
END
$$;
