-- The RFC 6962 audit path (§2.1.1) of the leaf at p_index (0-based) among
-- leaves given by their leaf hashes: the sibling of its node at each level,
-- leaf level first, skipping the levels where its node is a lone last node
-- carried up (audit.merkle_parent_level). RFC 9162 §2.1.3.2 verifies it from
-- the leaf hash, the index and the number of leaves. One subscript a level
-- (log2 n of them), so the walk to the element is paid log n times, not n.
CREATE OR REPLACE FUNCTION audit.merkle_path(p_leaf_hashes bytea[], p_index bigint)
RETURNS bytea[]
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level   bytea[] := coalesce(p_leaf_hashes, '{}');
    v_index   bigint := p_index;
    v_sibling bigint;
    v_path    bytea[] := '{}';
BEGIN
    IF p_index IS NULL OR p_index < 0 OR p_index >= cardinality(v_level) THEN
        RAISE EXCEPTION 'leaf index % is outside a tree of % leaves', p_index,
                        cardinality(v_level)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WHILE cardinality(v_level) > 1 LOOP
        v_sibling := v_index # 1;
        IF v_sibling < cardinality(v_level) THEN
            v_path := v_path || v_level[v_sibling + 1];
        END IF;
        v_level := audit.merkle_parent_level(v_level);
        v_index := v_index / 2;
    END LOOP;
    RETURN v_path;
END
$$;

GRANT EXECUTE ON FUNCTION audit.merkle_path(bytea[], bigint) TO monthend_runner, monthend_auditor;
