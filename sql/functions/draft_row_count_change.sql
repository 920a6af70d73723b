-- What changed in a row-counting part of a draft's fingerprint, in words, for
-- the refusal of a finalize: 'PREMIUM 240 rows then, 241 now', or 'CLAIM rows
-- changed in place' when the count is the same and the hash is not. NULL for
-- the parts that hash a whole table (they have no rows to count).
CREATE OR REPLACE FUNCTION batch.draft_row_count_change(p_then jsonb, p_now jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN jsonb_typeof(p_then) IS DISTINCT FROM 'object' THEN NULL
        -- {rows, hash}
        WHEN p_then ? 'rows'
            THEN CASE WHEN p_then -> 'rows' IS DISTINCT FROM p_now -> 'rows'
                      THEN format('%s rows then, %s now', p_then ->> 'rows', p_now ->> 'rows')
                      ELSE 'rows changed in place' END
        -- {source type: {rows, hash}}
        ELSE (SELECT string_agg(
                         t.key || ' ' || CASE WHEN p_then -> t.key -> 'rows'
                                                   IS DISTINCT FROM p_now -> t.key -> 'rows'
                                              THEN format('%s rows then, %s now',
                                                          coalesce(p_then -> t.key ->> 'rows', '0'),
                                                          coalesce(p_now -> t.key ->> 'rows', '0'))
                                              ELSE 'rows changed in place' END,
                         ', ' ORDER BY t.key)
              FROM jsonb_object_keys(p_then || coalesce(p_now, '{}')) AS t (key)
              WHERE p_then -> t.key IS DISTINCT FROM p_now -> t.key)
    END
$$;
