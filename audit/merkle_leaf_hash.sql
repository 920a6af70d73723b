-- The leaf hash of an RFC 6962 Merkle tree (§2.1): sha256 of a zero byte and
-- the leaf's bytes. Seal v2 hashes every journal entry's canonical bytes with
-- it (audit.range_root) and every range root (batch.batch_digest); the zero
-- byte keeps a leaf from ever hashing like an interior node
-- (audit.merkle_parent_level prefixes a one byte). A single-expression SQL
-- function, inlined into its callers.
CREATE OR REPLACE FUNCTION audit.merkle_leaf_hash(p_leaf bytea)
RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN sha256('\x00'::bytea || p_leaf);

GRANT EXECUTE ON FUNCTION audit.merkle_leaf_hash(bytea) TO monthend_runner, monthend_auditor;
