-- Records that a verification ran: a VERIFICATION_RUN event appended through
-- audit.append, so it is linked and hashed like every other event and carries
-- the session user as actor. The checks themselves run in a read-only
-- transaction; this is the one write the auditor role may make, in its own
-- short transaction afterwards (monthend verify calls it), so the chain shows
-- who verified, when, against which head, and what was found.
--
-- p_result, all keys but ok and head optional:
--   ok                     boolean: no problem found
--   head                   {"seq", "hash"} the chain head the checks saw, or
--                          null for an empty chain; it must be a row of the chain
--   kept_head              {"seq", "hash"} the head kept outside that was checked
--   problems               {"check name": count, ...}
--   checks                 ["check name", ...] the checks that ran
--   batches_verified       [batch_id, ...]
--   batches_with_problems  [batch_id, ...]
--   periods_verified       ["YYYY-MM", ...] the closed periods whose seals were checked
-- Nothing else is accepted, so the chain holds counts and references, never
-- free text. Returns the event's sequence number.
CREATE OR REPLACE FUNCTION audit.record_verification(p_result jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_bad  text;
    v_seq  bigint;
    v_hash text;
BEGIN
    IF jsonb_typeof(p_result) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a verification result is a JSON object, not %',
                        coalesce(jsonb_typeof(p_result), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(k.key, ', ' ORDER BY k.key) INTO v_bad
      FROM jsonb_object_keys(p_result) AS k (key)
     WHERE k.key NOT IN ('ok', 'head', 'kept_head', 'problems', 'checks', 'batches_verified',
                         'batches_with_problems', 'periods_verified');
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'a verification result has no key(s) %', v_bad
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(p_result -> 'ok') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION 'a verification result says whether it is ok: "ok" must be true or false'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Every key's shape, in one pass; v_bad names the first that is wrong.
    SELECT min(x.key) INTO v_bad
      FROM (
        SELECT 'head' AS key
        WHERE jsonb_typeof(p_result -> 'head') IS DISTINCT FROM 'null'
          AND NOT (jsonb_typeof(p_result -> 'head') = 'object'
                   AND jsonb_typeof(p_result #> '{head,seq}') = 'number'
                   AND jsonb_typeof(p_result #> '{head,hash}') = 'string')
        UNION ALL
        SELECT 'kept_head'
        WHERE p_result ? 'kept_head'
          AND jsonb_typeof(p_result -> 'kept_head') <> 'null'
          AND NOT (jsonb_typeof(p_result -> 'kept_head') = 'object'
                   AND jsonb_typeof(p_result #> '{kept_head,seq}') = 'number'
                   AND jsonb_typeof(p_result #> '{kept_head,hash}') = 'string'
                   AND (SELECT count(*) FROM jsonb_object_keys(p_result -> 'kept_head')) = 2
                   AND (p_result #>> '{kept_head,hash}') ~ '^[0-9a-f]{64}$')
        UNION ALL
        SELECT 'problems'
        WHERE p_result ? 'problems'
          AND (jsonb_typeof(p_result -> 'problems') <> 'object'
               OR EXISTS (SELECT FROM jsonb_each(p_result -> 'problems') AS p
                          WHERE jsonb_typeof(p.value) <> 'number'
                             OR p.value::text !~ '^[0-9]{1,18}$'
                             OR length(p.key) > 64))
        UNION ALL
        SELECT 'checks'
        WHERE p_result ? 'checks'
          AND (jsonb_typeof(p_result -> 'checks') <> 'array'
               OR EXISTS (SELECT FROM jsonb_array_elements(p_result -> 'checks') AS c (value)
                          WHERE jsonb_typeof(c.value) <> 'string'
                             OR length(c.value #>> '{}') > 64))
        UNION ALL
        SELECT b.key
        FROM (VALUES ('batches_verified'), ('batches_with_problems')) AS b (key)
        WHERE p_result ? b.key
          AND (jsonb_typeof(p_result -> b.key) <> 'array'
               OR EXISTS (SELECT FROM jsonb_array_elements(p_result -> b.key) AS e (value)
                          WHERE jsonb_typeof(e.value) <> 'number'
                             OR e.value::text !~ '^[0-9]{1,18}$'))
        UNION ALL
        SELECT 'periods_verified'
        WHERE p_result ? 'periods_verified'
          AND (jsonb_typeof(p_result -> 'periods_verified') <> 'array'
               OR EXISTS (SELECT FROM jsonb_array_elements(p_result -> 'periods_verified')
                                      AS e (value)
                          WHERE jsonb_typeof(e.value) <> 'string'
                             OR (e.value #>> '{}') !~ '^[0-9]{4}-(0[1-9]|1[0-2])$'))
      ) AS x;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'a verification result''s "%" is not of the documented shape', v_bad
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The head the checks saw must be in the chain, so the event points at
    -- a state of the chain that existed.
    IF jsonb_typeof(p_result -> 'head') = 'object' THEN
        v_seq := (p_result #>> '{head,seq}')::bigint;
        SELECT encode(l.hash, 'hex') INTO v_hash FROM audit.log AS l WHERE l.seq = v_seq;
        IF v_hash IS DISTINCT FROM lower(p_result #>> '{head,hash}') THEN
            RAISE EXCEPTION 'the verified head (row %, hash %) is not in the audit chain', v_seq,
                            p_result #>> '{head,hash}'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    RETURN audit.append('VERIFICATION_RUN', jsonb_build_object(
        'ok', p_result -> 'ok',
        'head', CASE WHEN v_hash IS NOT NULL
                     THEN jsonb_build_object('seq', v_seq, 'hash', v_hash) END,
        'kept_head', p_result -> 'kept_head',
        'problems', coalesce(p_result -> 'problems', '{}'::jsonb),
        'checks', coalesce(p_result -> 'checks', '[]'::jsonb),
        'batches_verified', coalesce(p_result -> 'batches_verified', '[]'::jsonb),
        'batches_with_problems', coalesce(p_result -> 'batches_with_problems', '[]'::jsonb),
        'periods_verified', coalesce(p_result -> 'periods_verified', '[]'::jsonb)));
END
$$;

GRANT EXECUTE ON FUNCTION audit.record_verification(jsonb) TO monthend_runner, monthend_auditor;
