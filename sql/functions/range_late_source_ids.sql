-- The source ids of a range of late rows (claimed in a period other than the
-- batch's own), for batch.range_journal_line's p_source_ids; NULL for a range
-- of the batch's own period, which its bounds describe well.
CREATE OR REPLACE FUNCTION batch.range_late_source_ids(p_range_id bigint)
RETURNS bigint[]
LANGUAGE sql
STABLE
AS $$
    SELECT array_agg(c.source_id ORDER BY c.source_id)
    FROM batch.range AS rg
    JOIN batch.run AS r ON r.batch_id = rg.batch_id
    JOIN batch.source_claim AS c
      ON c.period = rg.claim_period AND c.batch_id = rg.batch_id
     AND c.source_type = rg.source_type
     AND c.source_id BETWEEN rg.lo_source_id AND rg.hi_source_id
    WHERE rg.range_id = p_range_id AND rg.claim_period <> r.period
$$;
