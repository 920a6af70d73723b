-- Checks every link of the audit chain: sequence numbers 1..N without a gap,
-- each prev_hash equal to the previous row's hash (the first to the genesis
-- hash), each hash equal to sha256(prev_hash || canonical content), and the
-- chain head equal to the last row. One row per problem; no rows: all is well.
-- A chain rewritten consistently from the start passes here: compare
-- audit.head() with a head kept outside the database to catch that.
-- With p_after_seq, only the rows after that one are checked, the first of
-- them against its hash: what incremental verification needs once
-- audit.verify_kept_head has shown that row is the one a head kept earlier
-- names (NULL: the whole chain). The rows are read through the primary key from there on, so the
-- cost is what was appended since, not the chain's length.
CREATE OR REPLACE FUNCTION audit.verify_chain(p_after_seq bigint DEFAULT 0)
RETURNS TABLE (seq bigint, problem text, detail text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH chain AS (
        SELECT l.seq, l.prev_hash, l.hash,
               sha256(l.prev_hash || convert_to(audit.canonical_log_text(
                   l.seq, l.at, l.event, l.batch_id, l.actor, l.payload), 'UTF8')) AS recomputed,
               lag(l.seq) OVER (ORDER BY l.seq) AS previous_seq,
               lag(l.hash) OVER (ORDER BY l.seq) AS previous_hash
        FROM audit.log AS l
        WHERE l.seq >= coalesce(p_after_seq, 0)
    ), checked AS (
        SELECT c.* FROM chain AS c WHERE c.seq > coalesce(p_after_seq, 0)
    ), problems AS (
        SELECT c.seq, 'SEQUENCE_GAP' AS problem,
               format('row %s follows row %s: %s', c.seq, coalesce(c.previous_seq, 0),
                      CASE WHEN c.seq - coalesce(c.previous_seq, 0) = 2
                           THEN format('row %s is missing', c.seq - 1)
                           WHEN c.seq > coalesce(c.previous_seq, 0) + 1
                           THEN format('rows %s..%s are missing',
                                       coalesce(c.previous_seq, 0) + 1, c.seq - 1)
                           ELSE 'the chain starts at row 1' END) AS detail
        FROM checked AS c WHERE c.seq <> coalesce(c.previous_seq, p_after_seq, 0) + 1
        UNION ALL
        SELECT c.seq, 'BROKEN_LINK',
               format('prev_hash %s does not match the previous row''s hash %s',
                      encode(c.prev_hash, 'hex'),
                      encode(coalesce(c.previous_hash, sha256(''::bytea)), 'hex'))
        FROM checked AS c
        WHERE c.prev_hash <> coalesce(c.previous_hash, sha256(''::bytea))
          AND (c.previous_seq IS NOT NULL OR coalesce(p_after_seq, 0) = 0)
        UNION ALL
        SELECT c.seq, 'HASH_MISMATCH',
               format('stored hash %s, content hashes to %s', encode(c.hash, 'hex'),
                      encode(c.recomputed, 'hex'))
        FROM checked AS c WHERE c.hash <> c.recomputed
        UNION ALL
        SELECT h.seq, 'HEAD_MISMATCH',
               format('chain head says row %s with hash %s; the log ends at row %s with %s',
                      h.seq, encode(h.hash, 'hex'), coalesce(last.seq, 0),
                      encode(coalesce(last.hash, sha256(''::bytea)), 'hex'))
        FROM audit.chain_head AS h
        LEFT JOIN (SELECT l.seq, l.hash FROM audit.log AS l ORDER BY l.seq DESC LIMIT 1) AS last
               ON true
        WHERE h.seq <> coalesce(last.seq, 0) OR h.hash <> coalesce(last.hash, sha256(''::bytea))
    )
    SELECT p.seq, p.problem, p.detail FROM problems AS p ORDER BY p.seq, p.problem;
END;

GRANT EXECUTE ON FUNCTION audit.verify_chain(bigint) TO monthend_runner, monthend_auditor;
