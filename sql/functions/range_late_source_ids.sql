-- The source ids of a range of late rows (claimed in p_claim_period, a period
-- other than the batch's own), for batch.range_journal_line's p_source_ids.
-- One index range scan of that claims partition's primary key. Callers ask
-- only for a late range: a range of the batch's own period is described well
-- by its bounds.
CREATE OR REPLACE FUNCTION batch.range_late_source_ids(
    p_batch_id     bigint,
    p_claim_period text,
    p_source_type  text,
    p_lo_source_id bigint,
    p_hi_source_id bigint)
RETURNS bigint[]
LANGUAGE sql
STABLE
AS $$
    SELECT array_agg(c.source_id ORDER BY c.source_id)
    FROM batch.source_claim AS c
    WHERE c.period = p_claim_period AND c.source_type = p_source_type
      AND c.source_id BETWEEN p_lo_source_id AND p_hi_source_id
      AND c.batch_id = p_batch_id
$$;
