-- How many months after the latest OPEN period (the current month when none
-- is open) already have their ledger partitions: what a run of the coming
-- months will find made, so it pays for no DDL. gl.ensure_partitions_ahead
-- makes them; batch.health_check warns below one.
CREATE OR REPLACE FUNCTION gl.premade_months(OUT base_period text, OUT months integer)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH base AS (
        SELECT coalesce(max(ap.period) FILTER (WHERE ap.status = 'OPEN'),
                        to_char(current_date, 'YYYY-MM')) AS period
        FROM gl.accounting_period AS ap
    )
    SELECT b.period,
           coalesce((SELECT min(k) - 1
                     FROM generate_series(1, 121) AS k
                     WHERE to_regclass('gl.journal_entry_header_' || to_char(
                               to_date(b.period, 'YYYY-MM') + make_interval(months => k),
                               'YYYY_MM')) IS NULL
                        OR to_regclass('gl.journal_entry_line_' || to_char(
                               to_date(b.period, 'YYYY-MM') + make_interval(months => k),
                               'YYYY_MM')) IS NULL), 120)::integer
    FROM base AS b
$$;

GRANT EXECUTE ON FUNCTION gl.premade_months() TO monthend_runner, monthend_auditor;
