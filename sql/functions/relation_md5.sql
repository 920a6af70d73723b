-- md5 over every row of a (small) table as text, in text order: the
-- fingerprint of reference data a draft is built from
-- (batch.draft_input_fingerprint). A fixed DateStyle makes a row's text the
-- same in every session.
CREATE OR REPLACE FUNCTION batch.relation_md5(p_relation regclass)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD'
SET extra_float_digits = 1
AS $$
DECLARE
    v_md5 text;
BEGIN
    EXECUTE format('SELECT md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text), '''')) '
                   'FROM %s AS t', p_relation)
    INTO v_md5;
    RETURN v_md5;
END
$$;
