-- Phase 8, after the commit: planner statistics for the batch's new
-- partitions when they have none (validation gathers them), and the batch's
-- KPIs recorded in batch.kpi, batch.run.phase_seconds and the timeline. Safe
-- to run again.
CREATE OR REPLACE PROCEDURE batch.post_process(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_run     batch.run%ROWTYPE;
    v_suffix  text;
    v_seconds numeric;
    v_unanalyzed text;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id;
    IF NOT FOUND OR v_run.status <> 'COMMITTED' THEN
        RAISE EXCEPTION 'batch % is not COMMITTED; post-processing follows the commit', p_batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    v_suffix := replace(v_run.period, '-', '_');
    -- The validation's pieces gathered them before the commit (statistics
    -- stay with a table when it is attached); a batch validated by an earlier
    -- version has none yet.
    SELECT string_agg(format('gl.%I', p.relname), ', ') INTO v_unanalyzed
      FROM (VALUES ('journal_entry_header_' || v_suffix || '_b' || p_batch_id),
                   ('journal_entry_line_' || v_suffix || '_b' || p_batch_id)) AS p (relname)
     WHERE v_run.je_count > 0
       AND NOT EXISTS (SELECT FROM pg_stats AS st
                       WHERE st.schemaname = 'gl' AND st.tablename = p.relname);
    IF v_unanalyzed IS NOT NULL THEN
        EXECUTE 'ANALYZE ' || v_unanalyzed;
    END IF;
    PERFORM batch.record_phase_time(p_batch_id, 'post_processing', v_started);
    -- After the phase time, so the KPIs include post-processing.
    PERFORM batch.record_kpi(p_batch_id);

    v_seconds := extract(epoch FROM v_run.finished_at - v_run.started_at);
    PERFORM batch.log_event(p_batch_id, 'POST_PROCESSED',
        format('statistics gathered; %s source rows in %s s', v_run.source_rows,
               round(v_seconds, 1)),
        jsonb_build_object('seconds_to_commit', round(v_seconds, 3),
                           'source_rows_per_second',
                           round(v_run.source_rows / greatest(v_seconds, 0.001))));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.post_process(bigint) TO monthend_runner;
