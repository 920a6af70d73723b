-- A fingerprint of a period's claims and reversed postings (the rows of
-- batch.source_claim and batch.source_reversal whose source rows are of the
-- period): their number and the sum of a 64-bit hash of each row's text.
-- `monthend archive` takes it in the snapshot it writes the files from and
-- gl.archive_period takes it again before dropping anything: rows that a
-- later batch added, changed or removed in between (a late row posted, a
-- reversal committed) make them differ, and nothing is dropped.
CREATE OR REPLACE FUNCTION gl.archive_rows_fingerprint(p_period text)
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws(':',
        (SELECT concat_ws('/', count(*), coalesce(sum(hashtextextended(c::text, 0)), 0))
           FROM batch.source_claim AS c WHERE c.period = p_period),
        (SELECT concat_ws('/', count(*), coalesce(sum(hashtextextended(r::text, 0)), 0))
           FROM batch.source_reversal AS r WHERE r.period = p_period))
$$;
