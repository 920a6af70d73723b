-- The leaf hash of one journal entry under seal version 2: the RFC 6962 leaf
-- hash (audit.merkle_leaf_hash) of the UTF-8 bytes of the entry's text, which
-- is its header's canonical text and its lines' canonical texts
-- (audit.canonical_line_text_v2) in line_no order, joined by a newline.
-- Inlined into its callers.
CREATE OR REPLACE FUNCTION audit.entry_leaf_hash(p_entry_text text)
RETURNS bytea
LANGUAGE sql
IMMUTABLE STRICT PARALLEL SAFE
RETURN audit.merkle_leaf_hash(convert_to(p_entry_text, 'UTF8'));

GRANT EXECUTE ON FUNCTION audit.entry_leaf_hash(text) TO monthend_runner, monthend_auditor;
