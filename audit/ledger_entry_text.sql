-- The entries of one block of a committed batch's je_ids as the ledger holds
-- them now, each as the text its seal version hashes: the header's canonical
-- text, then its lines' canonical texts in line_no order, joined by a newline
-- (audit.range_root). audit.verify_batch recomputes a range's seal from it
-- and audit.prove_entry a range's leaves. Also, per entry, its header and
-- line counts, and whether its rows disagree on je_date (version 2 seals the
-- date once, in the header: a line dated otherwise is damage the seal itself
-- does not see).
-- One sort into entry order (the windows share it). A single-SELECT SQL
-- function, inlined into the caller's statement, where the bounds reach the
-- header primary key and the line BRIN index as index conditions.
CREATE OR REPLACE FUNCTION audit.ledger_entry_text(p_batch_id bigint, p_seal_version smallint,
                                                   p_lo_je_id bigint, p_hi_je_id bigint)
RETURNS TABLE (je_id bigint, entry_text text, headers bigint, lines bigint,
               dates_differ boolean)
LANGUAGE sql
STABLE PARALLEL SAFE
AS $$
    SELECT e.je_id, e.entry_text, e.headers, e.lines, e.dates_differ
    FROM (SELECT t.je_id,
                 row_number() OVER entry AS k,
                 string_agg(t.canonical, E'\n') OVER whole_entry AS entry_text,
                 count(*) FILTER (WHERE t.line_no IS NULL) OVER whole_entry AS headers,
                 count(t.line_no) OVER whole_entry AS lines,
                 min(t.je_date) OVER whole_entry <> max(t.je_date) OVER whole_entry
                     AS dates_differ
          FROM (SELECT h.je_id, NULL::integer AS line_no, h.je_date,
                       audit.canonical_header_text(h.je_id, h.je_number, h.je_date, h.period,
                           h.batch_id, h.source_type, h.source_id, h.je_seq, h.currency,
                           h.fx_rate, h.description, h.source_amount, h.reverses_je_id,
                           h.source_date) AS canonical
                FROM gl.journal_entry_header AS h
                WHERE h.batch_id = p_batch_id AND h.je_id BETWEEN p_lo_je_id AND p_hi_je_id
                UNION ALL
                SELECT l.je_id, l.line_no, l.je_date,
                       audit.canonical_line_text_by_version(
                           p_seal_version, l.je_id, l.je_date, l.line_no, l.account_code,
                           l.debit, l.credit, l.functional_debit, l.functional_credit,
                           l.batch_id)
                FROM gl.journal_entry_line AS l
                WHERE l.batch_id = p_batch_id AND l.je_id BETWEEN p_lo_je_id AND p_hi_je_id
               ) AS t
          WINDOW entry AS (PARTITION BY t.je_id ORDER BY t.line_no NULLS FIRST),
                 whole_entry AS (entry ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
         ) AS e
    WHERE e.k = 1
$$;

GRANT EXECUTE ON FUNCTION audit.ledger_entry_text(bigint, smallint, bigint, bigint)
    TO monthend_runner, monthend_auditor;
