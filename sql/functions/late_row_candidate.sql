-- The late rows a run of p_period takes under late_row_policy
-- NEXT_OPEN_PERIOD: noted strays and open dead letters dated in a CLOSED or
-- PERMANENTLY_CLOSED period before it with no OPEN period in between (so this
-- is the first open period after theirs), without a live posting (a claim not
-- reversed by a committed reversal). With the period each is claimed in, its
-- own. Empty under DEAD_LETTER. batch.preflight reads it twice: for the
-- periods to lock, then, under their locks, for the rows.
CREATE OR REPLACE FUNCTION batch.late_row_candidate(p_period text)
RETURNS TABLE (source_type text, source_id bigint, claim_period text)
LANGUAGE sql
STABLE
AS $$
    SELECT DISTINCT s.source_type, s.source_id, ap.period::text
    FROM (SELECT st.source_type, st.source_id FROM subledger.stray_transaction AS st
          UNION
          SELECT d.source_type, d.source_id FROM batch.dead_letter AS d
          WHERE d.status = 'OPEN') AS w
    JOIN subledger.source_transaction AS s
      ON s.source_type = w.source_type AND s.source_id = w.source_id
    JOIN gl.accounting_period AS ap ON s.txn_date BETWEEN ap.start_date AND ap.end_date
    WHERE (SELECT st.late_row_policy FROM gl.setting AS st) = 'NEXT_OPEN_PERIOD'
      AND ap.status IN ('CLOSED', 'PERMANENTLY_CLOSED') AND ap.period < p_period
      AND NOT EXISTS (SELECT FROM gl.accounting_period AS o
                      WHERE o.status = 'OPEN' AND o.period > ap.period AND o.period < p_period)
      AND NOT EXISTS (SELECT FROM batch.live_posting AS lp
                      WHERE lp.period = ap.period AND lp.source_type = s.source_type
                        AND lp.source_id = s.source_id)
$$;
