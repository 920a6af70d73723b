-- The database's costliest statements by total execution time, from
-- pg_stat_statements wherever it is installed. When it is not installed, or
-- installed but not loaded by the server, one row with available = false and
-- a note saying what to do. Runs with the caller's rights: a role without
-- pg_read_all_stats (pg_monitor) sees other users' statement text hidden.
CREATE OR REPLACE FUNCTION batch.statement_stats(p_limit integer DEFAULT 20)
RETURNS TABLE (
    available       boolean,
    note            text,
    queryid         bigint,
    calls           bigint,
    total_seconds   numeric,
    mean_ms         numeric,
    max_ms          numeric,
    rows            bigint,
    cache_hit_ratio numeric,
    query           text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_schema text;
BEGIN
    SELECT n.nspname::text INTO v_schema
      FROM pg_extension AS x JOIN pg_namespace AS n ON n.oid = x.extnamespace
     WHERE x.extname = 'pg_stat_statements';
    IF v_schema IS NULL THEN
        RETURN QUERY SELECT false,
            'pg_stat_statements is not installed in this database: a superuser runs CREATE '
            'EXTENSION pg_stat_statements, with shared_preload_libraries = '
            '''pg_stat_statements'' in postgresql.conf (monthend tune writes it)',
            NULL::bigint, NULL::bigint, NULL::numeric, NULL::numeric, NULL::numeric,
            NULL::bigint, NULL::numeric, NULL::text;
        RETURN;
    END IF;
    BEGIN
        RETURN QUERY EXECUTE format(
            'SELECT true, NULL::text, s.queryid, s.calls,'
            '       round((s.total_exec_time / 1000)::numeric, 3),'
            '       round(s.mean_exec_time::numeric, 3), round(s.max_exec_time::numeric, 3),'
            '       s.rows,'
            '       round(s.shared_blks_hit::numeric'
            '             / nullif(s.shared_blks_hit + s.shared_blks_read, 0), 4),'
            '       left(regexp_replace(s.query, ''[[:space:]]+'', '' '', ''g''), 500)'
            '  FROM %I.pg_stat_statements AS s'
            ' WHERE s.dbid = (SELECT d.oid FROM pg_database AS d'
            '                  WHERE d.datname = current_database())'
            ' ORDER BY s.total_exec_time DESC'
            ' LIMIT $1', v_schema)
            USING p_limit;
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        RETURN QUERY SELECT false,
            'pg_stat_statements is installed but the server has not loaded it: add it to '
            'shared_preload_libraries and restart PostgreSQL',
            NULL::bigint, NULL::bigint, NULL::numeric, NULL::numeric, NULL::numeric,
            NULL::bigint, NULL::numeric, NULL::text;
    END;
END
$$;

GRANT EXECUTE ON FUNCTION batch.statement_stats(integer) TO monthend_runner, monthend_auditor;
