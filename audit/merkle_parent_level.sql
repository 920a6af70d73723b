-- One level of an RFC 6962 Merkle tree from the level below it: nodes 2k and
-- 2k+1 (0-based) become sha256(0x01 || left || right); a lone last node is
-- carried up unchanged. Built bottom-up this way, the tree is exactly the one
-- RFC 6962 §2.1 defines top-down by splitting n leaves at the largest power
-- of two below n: the left subtree is always full, and only the rightmost
-- node of a level can be alone.
-- The level is walked once with FOREACH and the parents appended to an
-- expanded array: no subscript (which walks an array of variable-width
-- elements from its start) and no sort, so a level costs its width.
CREATE OR REPLACE FUNCTION audit.merkle_parent_level(p_level bytea[])
RETURNS bytea[]
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parents bytea[] := '{}';
    v_node    bytea;
    v_left    bytea;
BEGIN
    FOREACH v_node IN ARRAY p_level LOOP
        IF v_node IS NULL THEN
            RAISE EXCEPTION 'a Merkle tree node is NULL; every leaf and node is a hash'
                USING ERRCODE = 'null_value_not_allowed';
        ELSIF v_left IS NULL THEN
            v_left := v_node;
        ELSE
            v_parents := v_parents || sha256('\x01'::bytea || v_left || v_node);
            v_left := NULL;
        END IF;
    END LOOP;
    IF v_left IS NOT NULL THEN
        v_parents := v_parents || v_left;
    END IF;
    RETURN v_parents;
END
$$;

GRANT EXECUTE ON FUNCTION audit.merkle_parent_level(bytea[]) TO monthend_runner, monthend_auditor;
