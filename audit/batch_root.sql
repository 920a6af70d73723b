-- The seal of a batch from its ranges' seals in range order, by seal version:
-- the one definition batch.batch_digest (at commit), audit.verify_batch and
-- audit.prove_entry call.
--   version 1: sha256 over the range digests as lowercase hex, joined by a
--              newline;
--   version 2: the RFC 6962 Merkle Tree Hash over the range roots, each
--              root's 32 bytes one leaf (audit.merkle_leaf_hash).
CREATE OR REPLACE FUNCTION audit.batch_root(p_seal_version smallint, p_range_roots bytea[])
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_seal_version = 1 THEN
        RETURN sha256(convert_to(coalesce((SELECT string_agg(encode(r.root, 'hex'), E'\n'
                                                             ORDER BY r.ord)
                                             FROM unnest(p_range_roots) WITH ORDINALITY
                                                  AS r(root, ord)), ''), 'UTF8'));
    ELSIF p_seal_version = 2 THEN
        RETURN audit.merkle_root(ARRAY(SELECT audit.merkle_leaf_hash(r.root)
                                       FROM unnest(p_range_roots) WITH ORDINALITY AS r(root, ord)
                                       ORDER BY r.ord));
    END IF;
    RAISE EXCEPTION 'seal version % is not known; audit.seal_version lists the known ones',
                    p_seal_version
        USING ERRCODE = 'invalid_parameter_value';
END
$$;

GRANT EXECUTE ON FUNCTION audit.batch_root(smallint, bytea[]) TO monthend_runner, monthend_auditor;
