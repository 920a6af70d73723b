-- A reversal's ranges: the postings it reverses (its rows in
-- batch.source_reversal, written by batch.preflight_reversal with their
-- je_offsets) split into ranges of range_size rows per source type, in
-- source_id order, numbered in je_offset order; each range takes the
-- sub-block of entries its rows' offsets span. Called by
-- batch.allocate_ranges.
CREATE OR REPLACE PROCEDURE batch.cut_reversal_ranges(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run batch.run%ROWTYPE;
BEGIN
    SELECT * INTO STRICT v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    -- Knowing the rows' number, the planner reads them in key order from the
    -- primary key and groups the buckets by hashing, where it otherwise
    -- sorted them twice.
    ANALYZE batch.source_reversal;
    INSERT INTO batch.range (batch_id, range_no, claim_period, source_type, lo_source_id,
                             hi_source_id, row_count, je_offset, je_count)
    SELECT p_batch_id,
           row_number() OVER (ORDER BY b.je_offset),
           NULL::text, b.source_type, b.lo_source_id, b.hi_source_id, b.row_count, b.je_offset,
           coalesce(lead(b.je_offset) OVER (ORDER BY b.je_offset), v_run.je_count) - b.je_offset
    FROM (
        SELECT c.source_type, c.bucket, min(c.source_id) AS lo_source_id,
               max(c.source_id) AS hi_source_id, count(*) AS row_count,
               min(c.je_offset) AS je_offset
        FROM (
            SELECT sc.source_type, sc.source_id, sc.je_offset,
                   (row_number() OVER (PARTITION BY sc.source_type
                                       ORDER BY sc.source_id) - 1) / v_run.range_size AS bucket
            FROM batch.source_reversal AS sc
            WHERE sc.batch_id = p_batch_id
        ) AS c
        GROUP BY c.source_type, c.bucket
    ) AS b;
END
$$;
