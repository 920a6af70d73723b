-- The seal of one range, by seal version: the one definition that
-- batch.process_range, batch.process_reversal_range, audit.verify_batch and
-- audit.prove_entry call. The range's entries are given in je_id order, each
-- as its text (the header's canonical text, then its lines' canonical texts
-- in line_no order, joined by a newline):
--   version 1: p_entry_texts; the seal is sha256 over them joined by a
--              newline (the same bytes as every header and line text in
--              je_id, line_no order joined by a newline, as version 1 was
--              defined);
--   version 2: p_leaf_hashes, each entry's audit.entry_leaf_hash; the seal is
--              their RFC 6962 Merkle Tree Hash (audit.merkle_root).
-- A caller aggregates only the array its version needs (FILTER on the
-- version), and hashes the leaves in its own statement, where a hash a row
-- costs less than in a PL/pgSQL loop.
CREATE OR REPLACE FUNCTION audit.range_root(p_seal_version smallint, p_entry_texts text[],
                                            p_leaf_hashes bytea[])
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_seal_version = 1 THEN
        RETURN sha256(convert_to(array_to_string(coalesce(p_entry_texts, '{}'), E'\n'), 'UTF8'));
    ELSIF p_seal_version = 2 THEN
        RETURN audit.merkle_root(p_leaf_hashes);
    END IF;
    RAISE EXCEPTION 'seal version % is not known; audit.seal_version lists the known ones',
                    p_seal_version
        USING ERRCODE = 'invalid_parameter_value';
END
$$;

GRANT EXECUTE ON FUNCTION audit.range_root(smallint, text[], bytea[])
    TO monthend_runner, monthend_auditor;
