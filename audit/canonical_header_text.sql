-- The canonical text of a journal-entry header: what seals and verification
-- hash. Fixed formats (no DateStyle, no locale) so the text is the same on
-- every server. Two optional fields end it, each only when set, so entries
-- sealed before they existed keep their digests:
--   'R' and the je_id of the entry it reverses (a reversing entry),
--   'S' and the source row's date (an entry dated otherwise: a late row
--   posted in the next open period).
-- A single SQL expression, so the planner inlines it; STABLE, not IMMUTABLE,
-- because concat_ws and to_char are STABLE and an inlined body may not be
-- more volatile than its declaration.
CREATE OR REPLACE FUNCTION audit.canonical_header_text(
    p_je_id          bigint,
    p_je_number      text,
    p_je_date        date,
    p_period         text,
    p_batch_id       bigint,
    p_source_type    text,
    p_source_id      bigint,
    p_je_seq         integer,
    p_currency       char(3),
    p_fx_rate        numeric,
    p_description    text,
    p_source_amount  numeric,
    p_reverses_je_id bigint DEFAULT NULL,
    p_source_date    date DEFAULT NULL)
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
RETURN concat_ws('|', 'H', p_je_id, p_je_number, to_char(p_je_date, 'YYYY-MM-DD'), p_period,
                 p_batch_id, p_source_type, p_source_id, p_je_seq, p_currency, p_fx_rate,
                 p_description, p_source_amount, 'R' || p_reverses_je_id,
                 'S' || to_char(p_source_date, 'YYYY-MM-DD'));

GRANT EXECUTE ON FUNCTION audit.canonical_header_text(bigint, text, date, text, bigint, text,
    bigint, integer, char, numeric, text, numeric, bigint, date)
    TO monthend_runner, monthend_auditor;
