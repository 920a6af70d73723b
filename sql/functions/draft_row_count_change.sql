-- What changed in the source-row part of a draft's fingerprint ({source type:
-- {rows, hash}}), in words, for the refusal of a finalize: 'PREMIUM 240 rows
-- then, 241 now', or 'CLAIM rows changed in place' when the count is the same
-- and the hash is not. NULL for the parts that hash a whole table (they have
-- no rows to count).
CREATE OR REPLACE FUNCTION batch.draft_row_count_change(p_then jsonb, p_now jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(
               t.key || ' ' || CASE WHEN p_then -> t.key -> 'rows'
                                         IS DISTINCT FROM p_now -> t.key -> 'rows'
                                    THEN format('%s rows then, %s now',
                                                coalesce(p_then -> t.key ->> 'rows', '0'),
                                                coalesce(p_now -> t.key ->> 'rows', '0'))
                                    ELSE 'rows changed in place' END,
               ', ' ORDER BY t.key)
    FROM jsonb_object_keys(CASE WHEN jsonb_typeof(p_then) = 'object'
                                 AND jsonb_typeof(p_now) = 'object'
                                THEN p_then || p_now END) AS t (key)
    WHERE p_then -> t.key IS DISTINCT FROM p_now -> t.key
$$;
