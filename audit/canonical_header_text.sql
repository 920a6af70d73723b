-- The canonical text of a journal-entry header: what seals and verification
-- hash. Fixed formats (no DateStyle, no locale) so the text is the same on
-- every server. A reversing entry's text ends with the entry it reverses
-- ('R' and its je_id); NULL (every entry that reverses nothing) adds no
-- field, so entries sealed before reversals existed keep their digests.
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
    p_reverses_je_id bigint)
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
RETURN concat_ws('|', 'H', p_je_id, p_je_number, to_char(p_je_date, 'YYYY-MM-DD'), p_period,
                 p_batch_id, p_source_type, p_source_id, p_je_seq, p_currency, p_fx_rate,
                 p_description, p_source_amount, 'R' || p_reverses_je_id);

GRANT EXECUTE ON FUNCTION audit.canonical_header_text(bigint, text, date, text, bigint, text,
    bigint, integer, char, numeric, text, numeric, bigint) TO monthend_runner, monthend_auditor;

-- The same for an entry that reverses nothing (every run's), as sealed before
-- reversals existed: the form above without the link.
CREATE OR REPLACE FUNCTION audit.canonical_header_text(
    p_je_id         bigint,
    p_je_number     text,
    p_je_date       date,
    p_period        text,
    p_batch_id      bigint,
    p_source_type   text,
    p_source_id     bigint,
    p_je_seq        integer,
    p_currency      char(3),
    p_fx_rate       numeric,
    p_description   text,
    p_source_amount numeric)
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
RETURN audit.canonical_header_text(p_je_id, p_je_number, p_je_date, p_period, p_batch_id,
                                   p_source_type, p_source_id, p_je_seq, p_currency, p_fx_rate,
                                   p_description, p_source_amount, NULL::bigint);

GRANT EXECUTE ON FUNCTION audit.canonical_header_text(bigint, text, date, text, bigint, text,
    bigint, integer, char, numeric, text, numeric) TO monthend_runner, monthend_auditor;
