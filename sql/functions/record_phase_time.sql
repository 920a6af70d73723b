-- Adds a phase's elapsed seconds (since p_started) to batch.run.phase_seconds.
-- Phases re-run by resume accumulate, so the figure is the true time spent.
CREATE OR REPLACE FUNCTION batch.record_phase_time(
    p_batch_id bigint,
    p_phase    text,
    p_started  timestamptz)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    UPDATE batch.run AS r
       SET phase_seconds = r.phase_seconds || jsonb_build_object(p_phase,
               round((coalesce((r.phase_seconds ->> p_phase)::numeric, 0)
                      + extract(epoch FROM clock_timestamp() - p_started))::numeric, 3))
     WHERE r.batch_id = p_batch_id;
END;
