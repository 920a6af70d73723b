-- The chain's latest sequence number and hash. Keep this outside the
-- database: a chain rewritten consistently from the start is caught by
-- comparing with a head kept earlier (monthend verify --head-file).
CREATE OR REPLACE FUNCTION audit.head(OUT seq bigint, OUT hash text, OUT at timestamptz)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT l.seq, encode(l.hash, 'hex'), l.at
    FROM audit.log AS l
    ORDER BY l.seq DESC
    LIMIT 1;
END;

GRANT EXECUTE ON FUNCTION audit.head() TO monthend_runner, monthend_auditor;
