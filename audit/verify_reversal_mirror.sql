-- The mirror check of a committed reversal batch, for audit.verify_batch: each
-- of its ranges rebuilt from the entries it reverses (batch.range_reversal_line,
-- the definition batch.process_reversal_range wrote the range from) and set
-- beside the reversal's ledger rows in the range's je_id block. One row per
-- difference, naming the reversing entry:
--   REVERSAL_HEADER_MISSING / REVERSAL_HEADER_UNEXPECTED  an entry is not where it should be
--   REVERSAL_LINK_DIFFERS   the header names another entry than the one it mirrors
--   REVERSAL_HEADER_DIFFERS another header field differs from the mirror
--   LINE_NOT_MIRRORED       a line's account or amounts are not its original's, mirrored
--   LINE_MISSING / LINE_UNEXPECTED
-- Reads the reversal's rows and its originals once each, range by range.
CREATE OR REPLACE FUNCTION audit.verify_reversal_mirror(p_batch_id bigint)
RETURNS TABLE (range_no integer, problem text, detail text, je_id bigint, je_number text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH rg AS (
        SELECT g.range_no, g.source_type, g.lo_source_id, g.hi_source_id,
               r.batch_id, r.period, r.reversal_method, r.je_id_base, r.je_number_base,
               r.je_id_base + g.je_offset AS lo_je_id,
               r.je_id_base + g.je_offset + g.je_count - 1 AS hi_je_id
        FROM batch.range AS g JOIN batch.run AS r ON r.batch_id = g.batch_id
        WHERE g.batch_id = p_batch_id AND r.kind IN ('REVERSAL', 'AUTO_REVERSAL')
    ), expected AS (
        SELECT rg.range_no, e.*, gl.format_je_number(rg.period, e.je_no) AS expected_je_number
        FROM rg
        CROSS JOIN LATERAL batch.range_reversal_line(rg.batch_id, rg.period, rg.source_type,
                                                     rg.lo_source_id, rg.hi_source_id,
                                                     rg.je_id_base, rg.je_number_base) AS e
    ), header_pair AS (
        SELECT coalesce(e.range_no, a.range_no) AS range_no,
               coalesce(e.je_id, a.je_id) AS je_id, e.je_id IS NOT NULL AS expected,
               a.je_id IS NOT NULL AS actual, e.reverses_je_id AS e_reverses,
               a.reverses_je_id AS a_reverses, e.reverses_je_number,
               coalesce(a.je_number, e.expected_je_number) AS je_number,
               concat_ws('; ',
                   CASE WHEN a.je_number IS DISTINCT FROM e.expected_je_number
                        THEN format('je_number %s, mirror %s', a.je_number,
                                    e.expected_je_number) END,
                   CASE WHEN a.je_date IS DISTINCT FROM e.je_date
                        THEN format('je_date %s, mirror %s', a.je_date, e.je_date) END,
                   CASE WHEN a.source_id IS DISTINCT FROM e.source_id
                          OR a.je_seq IS DISTINCT FROM e.je_seq
                        THEN format('source %s entry %s, mirror %s entry %s', a.source_id,
                                    a.je_seq, e.source_id, e.je_seq) END,
                   CASE WHEN a.currency IS DISTINCT FROM e.currency
                          OR a.fx_rate IS DISTINCT FROM e.fx_rate
                        THEN format('currency %s at %s, mirror %s at %s', a.currency,
                                    a.fx_rate, e.currency, e.fx_rate) END,
                   CASE WHEN a.description IS DISTINCT FROM e.description
                        THEN format('description %L, mirror %L', a.description,
                                    e.description) END,
                   CASE WHEN a.source_amount IS DISTINCT FROM e.source_amount
                        THEN format('source_amount %s, mirror %s', a.source_amount,
                                    e.source_amount) END) AS differences
        FROM (SELECT x.* FROM expected AS x WHERE x.is_first_line) AS e
        FULL JOIN (SELECT rg.range_no, h.*
                   FROM rg JOIN gl.journal_entry_header AS h
                     ON h.batch_id = rg.batch_id
                    AND h.je_id BETWEEN rg.lo_je_id AND rg.hi_je_id
                   WHERE h.batch_id = p_batch_id) AS a
          ON a.je_id = e.je_id
    ), line_pair AS (
        SELECT coalesce(e.range_no, a.range_no) AS range_no,
               coalesce(e.je_id, a.je_id) AS je_id, coalesce(e.line_no, a.line_no) AS line_no,
               e.expected_je_number, e.reverses_je_number, rb.reversal_method,
               e.je_id IS NOT NULL AS expected, a.je_id IS NOT NULL AS actual,
               a.account_code AS a_account, e.account_code AS e_account,
               format('%s/%s (functional %s/%s)', a.debit, a.credit, a.functional_debit,
                      a.functional_credit) AS a_amounts,
               format('%s/%s (functional %s/%s)', e.debit, e.credit, e.functional_debit,
                      e.functional_credit) AS e_amounts,
               a.account_code IS DISTINCT FROM e.account_code
                   OR a.debit IS DISTINCT FROM e.debit OR a.credit IS DISTINCT FROM e.credit
                   OR a.functional_debit IS DISTINCT FROM e.functional_debit
                   OR a.functional_credit IS DISTINCT FROM e.functional_credit
                   OR a.je_date IS DISTINCT FROM e.je_date AS differs
        FROM expected AS e
        FULL JOIN (SELECT rg.range_no, l.*
                   FROM rg JOIN gl.journal_entry_line AS l
                     ON l.batch_id = rg.batch_id
                    AND l.je_id BETWEEN rg.lo_je_id AND rg.hi_je_id
                   WHERE l.batch_id = p_batch_id) AS a
          ON a.je_id = e.je_id AND a.line_no = e.line_no
        CROSS JOIN (SELECT r.reversal_method FROM batch.run AS r
                    WHERE r.batch_id = p_batch_id) AS rb
    )
    SELECT h.range_no, 'REVERSAL_HEADER_MISSING',
           format('je_id %s should reverse je_id %s (%s) and is not in the ledger', h.je_id,
                  h.e_reverses, h.reverses_je_number), h.je_id, h.je_number
    FROM header_pair AS h WHERE h.expected AND NOT h.actual
    UNION ALL
    SELECT h.range_no, 'REVERSAL_HEADER_UNEXPECTED',
           format('je_id %s (reversing je_id %s) mirrors no entry of the reversed postings',
                  h.je_id, h.a_reverses), h.je_id, h.je_number
    FROM header_pair AS h WHERE h.actual AND NOT h.expected
    UNION ALL
    SELECT h.range_no, 'REVERSAL_LINK_DIFFERS',
           format('je_id %s names je_id %s as the entry it reverses; it mirrors je_id %s (%s)',
                  h.je_id, coalesce(h.a_reverses::text, 'none'), h.e_reverses,
                  h.reverses_je_number), h.je_id, h.je_number
    FROM header_pair AS h
    WHERE h.expected AND h.actual AND h.a_reverses IS DISTINCT FROM h.e_reverses
    UNION ALL
    SELECT h.range_no, 'REVERSAL_HEADER_DIFFERS', h.differences, h.je_id, h.je_number
    FROM header_pair AS h WHERE h.expected AND h.actual AND h.differences <> ''
    UNION ALL
    SELECT l.range_no, 'LINE_NOT_MIRRORED',
           format('line %s: account %s, debit/credit %s; %s by %s gives account %s, %s',
                  l.line_no, l.a_account, l.a_amounts, l.reverses_je_number,
                  l.reversal_method, l.e_account, l.e_amounts),
           l.je_id, l.expected_je_number
    FROM line_pair AS l WHERE l.expected AND l.actual AND l.differs
    UNION ALL
    SELECT l.range_no, 'LINE_MISSING',
           format('line %s mirroring %s is not in the ledger', l.line_no, l.reverses_je_number),
           l.je_id, l.expected_je_number
    FROM line_pair AS l WHERE l.expected AND NOT l.actual
    UNION ALL
    SELECT l.range_no, 'LINE_UNEXPECTED',
           format('line %s (account %s) mirrors no line of the reversed entry', l.line_no,
                  l.a_account), l.je_id, l.expected_je_number
    FROM line_pair AS l WHERE l.actual AND NOT l.expected
    ORDER BY 1, 4, 2;
END;
