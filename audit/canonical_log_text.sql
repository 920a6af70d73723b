-- The canonical content of an audit-log row, hashed into the chain.
CREATE OR REPLACE FUNCTION audit.canonical_log_text(
    p_seq      bigint,
    p_at       timestamptz,
    p_event    text,
    p_batch_id bigint,
    p_actor    text,
    p_payload  jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
RETURN concat_ws('|', p_seq,
                 to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                 p_event, coalesce(p_batch_id::text, ''), p_actor, p_payload::text);

GRANT EXECUTE ON FUNCTION audit.canonical_log_text(bigint, timestamptz, text, bigint, text, jsonb)
    TO monthend_runner, monthend_auditor;
