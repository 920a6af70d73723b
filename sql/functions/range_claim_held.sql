-- Whether a range's claim is held: by any backend (p_pid NULL) or by the one
-- given. claim_range takes a session-level advisory lock on the range
-- (batch.lock_key('range_claim', range_id)) and
-- keeps it until the range is done or its failure recorded. PostgreSQL drops
-- the lock the moment the session ends, however it ends, so a held lock means
-- a live claimer and no reused pid or unreadable backend_start can fool it.
-- pg_locks is readable by every role.
CREATE OR REPLACE FUNCTION batch.range_claim_held(p_range_id bigint, p_pid integer DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT EXISTS (
        SELECT
        FROM pg_locks AS l
        WHERE l.locktype = 'advisory'
          AND l.database = (SELECT d.oid FROM pg_database AS d
                            WHERE d.datname = current_database())
          -- A bigint key shows as its high and low 32 bits, objsubid 1.
          AND l.classid = (batch.lock_key('range_claim', p_range_id) >> 32)::oid
          AND l.objid = (batch.lock_key('range_claim', p_range_id) & x'FFFFFFFF'::bigint)::oid
          AND l.objsubid = 1
          AND l.granted
          AND (p_pid IS NULL OR l.pid = p_pid));
END;

GRANT EXECUTE ON FUNCTION batch.range_claim_held(bigint, integer)
    TO monthend_runner;
