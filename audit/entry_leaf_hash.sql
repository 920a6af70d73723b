-- The leaf hash of one journal entry under seal version 2: the RFC 6962 leaf
-- hash (audit.merkle_leaf_hash) of the UTF-8 bytes of the entry's text, which
-- is its header's canonical text and its lines' canonical texts
-- (audit.canonical_line_text_v2) in line_no order, joined by a newline.
-- A single-expression SQL function, inlined into its callers; STABLE, not
-- IMMUTABLE, because convert_to is: an inlined body may not be more volatile
-- than its declaration, and a function that is not inlined costs a call of
-- the SQL function executor a leaf (several times the hash itself, measured).
CREATE OR REPLACE FUNCTION audit.entry_leaf_hash(p_entry_text text)
RETURNS bytea
LANGUAGE sql
STABLE STRICT PARALLEL SAFE
RETURN audit.merkle_leaf_hash(convert_to(p_entry_text, 'UTF8'));

GRANT EXECUTE ON FUNCTION audit.entry_leaf_hash(text) TO monthend_runner, monthend_auditor;
