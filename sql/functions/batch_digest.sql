-- A batch's digest and its ranges' digests, as the seal records them: sha256
-- over the range digests (hex, one a line) in range order, and the list of
-- {range_no, digest}. The commit seals it; a draft records it when built, and
-- the draft's commit seals the same value.
CREATE OR REPLACE FUNCTION batch.batch_digest(p_batch_id bigint,
                                              OUT digest bytea, OUT ranges jsonb)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(convert_to(coalesce(string_agg(encode(rg.digest, 'hex'), E'\n'
                                                 ORDER BY rg.range_no), ''), 'UTF8')),
           coalesce(jsonb_agg(jsonb_build_object('range_no', rg.range_no,
                                                 'digest', encode(rg.digest, 'hex'))
                              ORDER BY rg.range_no), '[]')
    FROM batch.range AS rg
    WHERE rg.batch_id = p_batch_id
$$;
