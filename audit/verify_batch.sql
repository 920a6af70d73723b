-- Recomputes a committed batch's seal from the ledger rows as they are now:
-- each range's digest over the canonical text of its headers and lines
-- (range = its je_id block), then the batch digest over the range digests, and
-- compares them with what the commit sealed into the audit chain. Names the
-- range that differs and, where the range's row counts changed, says so.
-- One row per problem; no rows: all is well.
CREATE OR REPLACE FUNCTION audit.verify_batch(p_batch_id bigint)
RETURNS TABLE (range_no integer, problem text, detail text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH run AS (
        SELECT r.* FROM batch.run AS r WHERE r.batch_id = p_batch_id
    ), seal AS (
        SELECT l.payload FROM audit.log AS l
        WHERE l.event = 'BATCH_COMMITTED' AND l.batch_id = p_batch_id
        ORDER BY l.seq DESC LIMIT 1
    ), sealed_range AS (
        SELECT (x ->> 'range_no')::integer AS range_no, decode(x ->> 'digest', 'hex') AS digest
        FROM seal AS s, jsonb_array_elements(s.payload -> 'ranges') AS x
    ), block AS (
        SELECT rg.range_no, rg.je_count, rg.line_count,
               run.je_id_base + rg.je_offset AS lo_je_id,
               run.je_id_base + rg.je_offset + rg.je_count - 1 AS hi_je_id
        FROM batch.range AS rg JOIN run ON run.batch_id = rg.batch_id
    ), row_text AS (
        SELECT b.range_no, h.je_id, 0 AS line_no,
               audit.canonical_header_text(h.je_id, h.je_number, h.je_date, h.period,
                   h.batch_id, h.source_type, h.source_id, h.je_seq, h.currency, h.fx_rate,
                   h.description, h.source_amount) AS canonical
        FROM gl.journal_entry_header AS h
        JOIN block AS b ON h.je_id BETWEEN b.lo_je_id AND b.hi_je_id
        WHERE h.batch_id = p_batch_id
        UNION ALL
        SELECT b.range_no, l.je_id, l.line_no,
               audit.canonical_line_text(l.je_id, l.je_date, l.line_no, l.account_code, l.debit,
                   l.credit, l.functional_debit, l.functional_credit, l.batch_id)
        FROM gl.journal_entry_line AS l
        JOIN block AS b ON l.je_id BETWEEN b.lo_je_id AND b.hi_je_id
        WHERE l.batch_id = p_batch_id
    ), recomputed AS (
        SELECT t.range_no,
               sha256(convert_to(string_agg(t.canonical, E'\n' ORDER BY t.je_id, t.line_no),
                                 'UTF8')) AS digest,
               count(*) FILTER (WHERE t.line_no = 0) AS headers,
               count(*) FILTER (WHERE t.line_no > 0) AS lines
        FROM row_text AS t GROUP BY t.range_no
    ), problems AS (
        SELECT NULL::integer AS range_no, 'NOT_COMMITTED' AS problem,
               format('batch %s is %s, not COMMITTED', p_batch_id,
                      coalesce((SELECT run.status FROM run), 'missing')) AS detail
        WHERE NOT EXISTS (SELECT FROM run WHERE run.status = 'COMMITTED')
        UNION ALL
        SELECT NULL, 'SEAL_MISSING', format('no BATCH_COMMITTED event for batch %s in audit.log',
                                            p_batch_id)
        WHERE EXISTS (SELECT FROM run WHERE run.status = 'COMMITTED')
          AND NOT EXISTS (SELECT FROM seal)
        UNION ALL
        SELECT b.range_no, 'RANGE_DIGEST_MISMATCH',
               format('range %s (je_id %s..%s): sealed %s, ledger rows hash to %s; '
                      '%s headers and %s lines found, %s and %s sealed',
                      b.range_no, b.lo_je_id, b.hi_je_id, encode(s.digest, 'hex'),
                      encode(c.digest, 'hex'), coalesce(c.headers, 0), coalesce(c.lines, 0),
                      b.je_count, b.line_count)
        FROM block AS b
        JOIN sealed_range AS s ON s.range_no = b.range_no
        LEFT JOIN recomputed AS c ON c.range_no = b.range_no
        WHERE c.digest IS DISTINCT FROM s.digest
        UNION ALL
        SELECT NULL, 'BATCH_DIGEST_MISMATCH',
               format('sealed batch digest %s, batch.run says %s', s.payload ->> 'digest',
                      encode(run.digest, 'hex'))
        FROM seal AS s, run WHERE s.payload ->> 'digest' IS DISTINCT FROM encode(run.digest, 'hex')
        UNION ALL
        SELECT NULL, 'ROWS_OUTSIDE_RANGES',
               format('%s ledger rows of batch %s lie outside every range''s je_id block',
                      x.n, p_batch_id)
        FROM (SELECT (SELECT count(*) FROM gl.journal_entry_header AS h
                      WHERE h.batch_id = p_batch_id)
                   + (SELECT count(*) FROM gl.journal_entry_line AS l
                      WHERE l.batch_id = p_batch_id)
                   - (SELECT count(*) FROM row_text) AS n) AS x
        WHERE x.n <> 0
    )
    SELECT p.range_no, p.problem, p.detail FROM problems AS p ORDER BY p.range_no NULLS FIRST;
END;

GRANT EXECUTE ON FUNCTION audit.verify_batch(bigint) TO monthend_runner, monthend_auditor;
