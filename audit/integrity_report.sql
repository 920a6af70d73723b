-- Audit-trail integrity report of one period: one row a batch of the period,
-- whatever its status, with its control figures and, for a COMMITTED batch,
-- the proof that what the ledger holds is what was sealed:
--   seal_seq/seal_hash  its BATCH_COMMITTED event in audit.log;
--   seal_digest_ok      the sealed digest is the digest batch.run records;
--   chain_ok            audit.verify_chain() finds no problem from genesis up to
--                       the seal, so the seal is where and what it was written;
--   numbering_ok        its je_number block follows the period's earlier
--                       committed batches without gap or overlap (and the last
--                       one ends at gl.accounting_period.je_numbers_used);
--   problems            rows audit.verify_batch(batch_id) returns: it recomputes
--                       every range digest from the ledger rows as they are now
--                       (0: the ledger rows are exactly those sealed);
--   ok                  all of the above. Empty for batches that never
--                       committed: they left the ledger untouched.
-- monthend report integrity exits 1 when a committed batch is not ok.
--
-- Cost: verify_batch re-hashes every ledger row of each committed batch (the
-- proof an auditor asks for); the rest reads the control tables and audit.log.
-- The verification functions are called, not copied, so the hashing rule
-- lives in audit/ alone.
CREATE OR REPLACE FUNCTION audit.integrity_report(p_period text)
RETURNS TABLE (
    batch_id         bigint,
    status           text,
    started_at       timestamptz,
    committed_at     timestamptz,
    source_rows      bigint,
    posted_rows      bigint,
    dead_letter_rows bigint,
    entries          bigint,
    lines            bigint,
    first_je_number  text,
    last_je_number   text,
    digest           text,
    seal_seq         bigint,
    seal_hash        text,
    seal_at          timestamptz,
    seal_digest_ok   boolean,
    chain_ok         boolean,
    numbering_ok     boolean,
    problems         bigint,
    problem_codes    text[],
    ok               boolean)
LANGUAGE sql
STABLE
AS $$
    WITH run AS (
        SELECT r.batch_id, r.status, r.started_at, r.finished_at, r.source_rows,
               r.claimed_rows, r.dead_letter_rows, r.je_count, r.line_count,
               r.je_number_base, r.digest, r.period
        FROM batch.run AS r
        WHERE r.period = p_period
    ), numbered AS (
        -- Committed batches in commit order: each one's block starts where the
        -- blocks before it end, and the last ends where the period says.
        SELECT r.batch_id,
               r.je_number_base = coalesce(sum(r.je_count) OVER (
                   ORDER BY r.batch_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
               AND (lead(r.batch_id) OVER (ORDER BY r.batch_id) IS NOT NULL
                    OR r.je_number_base + r.je_count = ap.je_numbers_used) AS numbering_ok
        FROM run AS r
        JOIN gl.accounting_period AS ap ON ap.period = r.period
        WHERE r.status = 'COMMITTED'
    ), seal AS (
        SELECT DISTINCT ON (l.batch_id) l.batch_id, l.seq, l.hash, l.at,
               l.payload ->> 'digest' AS sealed_digest
        FROM audit.log AS l
        WHERE l.event = 'BATCH_COMMITTED'
          AND l.batch_id IN (SELECT r.batch_id FROM run AS r WHERE r.status = 'COMMITTED')
        ORDER BY l.batch_id, l.seq DESC
    ), first_chain_problem AS (
        SELECT min(v.seq) AS seq FROM audit.verify_chain() AS v
    )
    SELECT x.batch_id, x.status, x.started_at, x.committed_at, x.source_rows, x.posted_rows,
           x.dead_letter_rows, x.entries, x.lines, x.first_je_number, x.last_je_number,
           x.digest, x.seal_seq, x.seal_hash, x.seal_at, x.seal_digest_ok, x.chain_ok,
           x.numbering_ok, x.problems, x.problem_codes,
           CASE WHEN x.status = 'COMMITTED'
                THEN x.seal_digest_ok AND x.chain_ok AND x.numbering_ok AND x.problems = 0
           END
    FROM (
        SELECT r.batch_id, r.status, r.started_at,
               CASE WHEN r.status = 'COMMITTED' THEN r.finished_at END AS committed_at,
               r.source_rows, r.claimed_rows AS posted_rows, r.dead_letter_rows,
               r.je_count AS entries, r.line_count AS lines,
               CASE WHEN r.je_count > 0
                    THEN gl.format_je_number(r.period, r.je_number_base + 1) END
                   AS first_je_number,
               CASE WHEN r.je_count > 0
                    THEN gl.format_je_number(r.period, r.je_number_base + r.je_count) END
                   AS last_je_number,
               encode(r.digest, 'hex') AS digest,
               s.seq AS seal_seq, encode(s.hash, 'hex') AS seal_hash, s.at AS seal_at,
               CASE WHEN r.status = 'COMMITTED'
                    THEN s.seq IS NOT NULL
                         AND s.sealed_digest IS NOT DISTINCT FROM encode(r.digest, 'hex')
               END AS seal_digest_ok,
               CASE WHEN r.status = 'COMMITTED'
                    THEN s.seq IS NOT NULL AND coalesce(s.seq < fc.seq, true)
               END AS chain_ok,
               n.numbering_ok,
               v.problems,
               v.problem_codes
        FROM run AS r
        CROSS JOIN first_chain_problem AS fc
        LEFT JOIN seal AS s ON s.batch_id = r.batch_id
        LEFT JOIN numbered AS n ON n.batch_id = r.batch_id
        LEFT JOIN LATERAL (
            SELECT count(*) AS problems,
                   coalesce(array_agg(DISTINCT vb.problem), '{}') AS problem_codes
            FROM audit.verify_batch(r.batch_id) AS vb
            WHERE r.status = 'COMMITTED'
            HAVING r.status = 'COMMITTED'
        ) AS v ON true
    ) AS x
    ORDER BY x.batch_id
$$;

GRANT EXECUTE ON FUNCTION audit.integrity_report(text) TO monthend_auditor;
