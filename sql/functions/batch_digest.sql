-- A batch's seal and its ranges' seals, as the commit records them: the seal
-- over the range seals by the batch's seal version (audit.batch_root), and
-- the list of {range_no, digest}. The commit seals it; a draft records it
-- when built, and the draft's commit seals the same value.
CREATE OR REPLACE FUNCTION batch.batch_digest(p_batch_id bigint,
                                              OUT digest bytea, OUT ranges jsonb)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT audit.batch_root(r.seal_version,
                            coalesce(array_agg(rg.digest ORDER BY rg.range_no)
                                         FILTER (WHERE rg.range_no IS NOT NULL), '{}')),
           coalesce(jsonb_agg(jsonb_build_object('range_no', rg.range_no,
                                                 'digest', encode(rg.digest, 'hex'))
                              ORDER BY rg.range_no) FILTER (WHERE rg.range_no IS NOT NULL),
                    '[]')
    FROM batch.run AS r
    LEFT JOIN batch.range AS rg ON rg.batch_id = r.batch_id
    WHERE r.batch_id = p_batch_id
    GROUP BY r.seal_version
$$;
