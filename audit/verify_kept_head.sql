-- Checks a head kept outside the database (audit.head() output saved earlier,
-- or the file `monthend verify --head-file` keeps) against the chain as it is
-- now: the row at that sequence number must still exist and carry that hash.
-- That catches what audit.verify_chain() cannot: a chain rewritten
-- consistently from genesis (every hash recomputed), and a chain cut back
-- below the kept row with the head reset to match.
-- One row per problem; no rows: the kept head is in the chain.
CREATE OR REPLACE FUNCTION audit.verify_kept_head(p_seq bigint, p_hash text)
RETURNS TABLE (seq bigint, problem text, detail text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT p_seq, 'KEPT_HEAD_MISSING',
           CASE WHEN coalesce(m.seq, 0) < p_seq
                THEN format('the kept head is row %s, but the chain ends at row %s: rows were '
                            'removed from its end', p_seq, coalesce(m.seq, 0))
                ELSE format('the kept head is row %s, which is missing from the chain', p_seq)
           END
    FROM (SELECT max(l.seq) AS seq FROM audit.log AS l) AS m
    WHERE p_seq > 0 AND NOT EXISTS (SELECT FROM audit.log AS l WHERE l.seq = p_seq)
    UNION ALL
    SELECT p_seq, 'KEPT_HEAD_MISMATCH',
           format('row %s carries hash %s, the kept head says %s: the chain was rewritten up '
                  'to this row', p_seq, encode(l.hash, 'hex'), lower(p_hash))
    FROM audit.log AS l
    WHERE l.seq = p_seq AND encode(l.hash, 'hex') IS DISTINCT FROM lower(p_hash)
    UNION ALL
    SELECT p_seq, 'KEPT_HEAD_MISMATCH',
           format('the kept head is row %s with hash %s; the chain starts at row 1 and the '
                  'genesis hash is %s', p_seq, lower(p_hash), encode(sha256(''::bytea), 'hex'))
    WHERE p_seq = 0 AND lower(p_hash) IS DISTINCT FROM encode(sha256(''::bytea), 'hex')
    UNION ALL
    SELECT p_seq, 'KEPT_HEAD_INVALID', format('a kept head has a sequence number of 0 or more, '
                                              'not %s', p_seq)
    WHERE p_seq IS NULL OR p_seq < 0;
END;

GRANT EXECUTE ON FUNCTION audit.verify_kept_head(bigint, text)
    TO monthend_runner, monthend_auditor;
