-- What to do with an unfinished batch that is in the way (of a run, a
-- reversal, a close): a draft is finalized or discarded (resumed first if it
-- is not built yet), any other batch resumed or cancelled. The one wording the
-- refusals that name such a batch use.
CREATE OR REPLACE FUNCTION batch.unfinished_batch_hint(p_batch_id bigint)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN r.mode = 'DRAFT' AND r.status = 'DRAFT'
            THEN format('It is a draft: post it with "monthend finalize %s", or remove it with "monthend discard %s".',
                        r.batch_id, r.batch_id)
        WHEN r.mode = 'DRAFT'
            THEN format('It is a draft: finish building it with "monthend resume %s", or remove it with "monthend discard %s".',
                        r.batch_id, r.batch_id)
        ELSE format('Wait for it, or finish it with "monthend resume %s", or abandon it with "monthend cancel %s".',
                    r.batch_id, r.batch_id)
    END
    FROM batch.run AS r
    WHERE r.batch_id = p_batch_id
$$;
