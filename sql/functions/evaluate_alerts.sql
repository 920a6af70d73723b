-- Judges a batch's alerts (batch.alert_evaluation) and records each change of
-- an alert's state once, as a batch.event: kind ALERT at level WARNING or
-- CRITICAL with the action to take (raised, escalated or eased), or kind
-- ALERT_CLEARED when it no longer holds. An alert that cannot be judged now
-- (warm-up, no value, the batch no longer processing) keeps its last state.
-- The run's monitor calls it every few seconds; calling it more often, or from
-- several hosts at once, records nothing twice. Returns the events recorded.
CREATE OR REPLACE FUNCTION batch.evaluate_alerts(p_batch_id bigint)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_eval     record;
    v_last     text;
    v_recorded integer := 0;
BEGIN
    -- Serializes evaluators of one batch.
    PERFORM pg_advisory_xact_lock(batch.lock_key('alert_evaluation', p_batch_id));
    FOR v_eval IN
        SELECT ae.alert, ae.severity, ae.value, ae.unit, ae.warning, ae.critical, ae.action,
               ae.description, ae.direction
          FROM batch.alert_evaluation AS ae
         WHERE ae.batch_id = p_batch_id AND ae.applicable
         ORDER BY ae.alert
    LOOP
        SELECT e.detail ->> 'severity' INTO v_last
          FROM batch.event AS e
         WHERE e.batch_id = p_batch_id AND e.kind IN ('ALERT', 'ALERT_CLEARED')
           AND e.detail ->> 'alert' = v_eval.alert
         ORDER BY e.event_id DESC
         LIMIT 1;
        CONTINUE WHEN coalesce(v_eval.severity, 'OK') = coalesce(v_last, 'OK');
        IF v_eval.severity IS NULL THEN
            PERFORM batch.log_event(p_batch_id, 'ALERT_CLEARED',
                format('%s cleared: %s is %s %s', v_eval.alert, v_eval.description,
                       v_eval.value, v_eval.unit),
                jsonb_build_object('alert', v_eval.alert, 'severity', 'OK',
                                   'value', v_eval.value, 'unit', v_eval.unit),
                'INFO');
        ELSE
            PERFORM batch.log_event(p_batch_id, 'ALERT',
                format('%s %s: %s is %s %s (%s %s %s %s). %s', v_eval.alert, v_eval.severity,
                       v_eval.description, v_eval.value, v_eval.unit,
                       lower(v_eval.severity), v_eval.direction,
                       CASE v_eval.severity WHEN 'CRITICAL' THEN v_eval.critical
                                            ELSE v_eval.warning END,
                       v_eval.unit, v_eval.action),
                jsonb_build_object('alert', v_eval.alert, 'severity', v_eval.severity,
                                   'value', v_eval.value, 'unit', v_eval.unit,
                                   'warning', v_eval.warning, 'critical', v_eval.critical,
                                   'action', v_eval.action),
                v_eval.severity);
        END IF;
        v_recorded := v_recorded + 1;
    END LOOP;
    RETURN v_recorded;
END
$$;

GRANT EXECUTE ON FUNCTION batch.evaluate_alerts(bigint) TO monthend_runner;
