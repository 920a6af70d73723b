-- The RFC 6962 Merkle Tree Hash of leaves given by their leaf hashes
-- (audit.merkle_leaf_hash), in leaf order: level by level up to one node.
-- No leaves: the hash of the empty string, as RFC 6962 defines it.
CREATE OR REPLACE FUNCTION audit.merkle_root(p_leaf_hashes bytea[])
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level bytea[] := coalesce(p_leaf_hashes, '{}');
BEGIN
    IF cardinality(v_level) = 0 THEN
        RETURN sha256(''::bytea);
    ELSIF cardinality(v_level) = 1 AND v_level[1] IS NULL THEN
        RAISE EXCEPTION 'a Merkle tree node is NULL; every leaf and node is a hash'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    WHILE cardinality(v_level) > 1 LOOP
        v_level := audit.merkle_parent_level(v_level);
    END LOOP;
    RETURN v_level[1];
END
$$;

GRANT EXECUTE ON FUNCTION audit.merkle_root(bytea[]) TO monthend_runner, monthend_auditor;
