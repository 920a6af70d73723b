-- For DBAs: client connections grouped by database, user, application and
-- state, against max_connections. monthend's own connections are named
-- 'monthend <host>/w<n>' (workers), 'monthend monitor' and 'monthend driver'.
CREATE OR REPLACE VIEW batch.health_connections AS
SELECT a.datname,
       a.usename,
       coalesce(nullif(a.application_name, ''), '(none)') AS application_name,
       coalesce(a.state, 'unknown') AS state,
       count(*) AS connections,
       round(extract(epoch FROM max(clock_timestamp() - a.xact_start)), 1)
           AS oldest_transaction_seconds,
       round(extract(epoch FROM max(clock_timestamp() - a.state_change)), 1)
           AS longest_in_state_seconds,
       current_setting('max_connections')::integer AS max_connections,
       (SELECT count(*) FROM pg_stat_activity AS t WHERE t.backend_type = 'client backend')
           AS connections_used
FROM pg_stat_activity AS a
WHERE a.backend_type = 'client backend'
GROUP BY a.datname, a.usename, coalesce(nullif(a.application_name, ''), '(none)'),
         coalesce(a.state, 'unknown')
ORDER BY count(*) DESC, 1, 2, 3, 4;

GRANT SELECT ON batch.health_connections TO monthend_runner, monthend_auditor;
