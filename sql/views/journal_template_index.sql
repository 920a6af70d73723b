-- Each template with its 0-based position among its transaction type's
-- templates (je_id and je_number are allocated by that position), how many
-- templates the type has, its first line, and the quantities pre-flight needs
-- to tell which rows could give a negative balancing line.
CREATE OR REPLACE VIEW gl.journal_template_index AS
SELECT t.source_type,
       t.txn_type,
       t.je_seq,
       t.description,
       (row_number() OVER w - 1)::integer                         AS je_index,
       (count(*) OVER (PARTITION BY t.source_type, t.txn_type))::integer AS template_count,
       r.first_line_no,
       r.line_count,
       r.balancing_lines,
       r.ratio_lines,
       -- Sum of ratios against the balancing line minus those beside it: the
       -- balancing amount is about amount * margin, give or take rounding.
       r.margin
FROM gl.journal_template AS t
LEFT JOIN LATERAL (
    SELECT min(pr.line_no)                          AS first_line_no,
           count(*)::integer                        AS line_count,
           count(*) FILTER (WHERE pr.ratio IS NULL)::integer     AS balancing_lines,
           count(*) FILTER (WHERE pr.ratio IS NOT NULL)::integer AS ratio_lines,
           sum(CASE WHEN pr.side = b.side THEN -pr.ratio ELSE pr.ratio END)
               FILTER (WHERE pr.ratio IS NOT NULL)  AS margin
    FROM gl.posting_rule AS pr
    LEFT JOIN gl.posting_rule AS b
           ON b.source_type = pr.source_type AND b.txn_type = pr.txn_type
          AND b.je_seq = pr.je_seq AND b.ratio IS NULL
    WHERE pr.source_type = t.source_type AND pr.txn_type = t.txn_type AND pr.je_seq = t.je_seq
) AS r ON true
WINDOW w AS (PARTITION BY t.source_type, t.txn_type ORDER BY t.je_seq);

GRANT SELECT ON gl.journal_template_index TO monthend_runner, monthend_auditor;
