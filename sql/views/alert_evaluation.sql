-- Every alert of batch.alert_threshold judged now against batch.batch_metrics,
-- one row a batch and alert. severity is CRITICAL, WARNING or NULL (fine, or
-- not applicable: disabled, no value yet, or a throughput alert still in the
-- warm-up). Reading it records nothing; batch.evaluate_alerts records changes.
CREATE OR REPLACE VIEW batch.alert_evaluation AS
SELECT m.batch_id,
       t.alert,
       t.metric,
       t.direction,
       t.warning,
       t.critical,
       t.unit,
       v.value,
       a.applicable,
       CASE WHEN NOT a.applicable THEN NULL
            WHEN t.direction = 'below' AND v.value < t.critical THEN 'CRITICAL'
            WHEN t.direction = 'above' AND v.value > t.critical THEN 'CRITICAL'
            WHEN t.direction = 'below' AND v.value < t.warning THEN 'WARNING'
            WHEN t.direction = 'above' AND v.value > t.warning THEN 'WARNING'
       END AS severity,
       t.action,
       t.description
FROM batch.batch_metrics AS m
CROSS JOIN batch.alert_threshold AS t
CROSS JOIN LATERAL (
    SELECT CASE t.metric
               WHEN 'current_rows_per_second' THEN m.current_rows_per_second
               WHEN 'projected_minutes' THEN round(m.projected_seconds / 60.0, 1)
               WHEN 'worker_rows_per_second' THEN m.worker_rows_per_second
               WHEN 'ranges_failed' THEN m.ranges_with_failures::numeric
               WHEN 'dead_letter_percent' THEN m.dead_letter_percent
           END AS value
) AS v
CROSS JOIN LATERAL (
    SELECT t.enabled AND v.value IS NOT NULL AND (m.warmed_up OR NOT t.after_warmup)
               AS applicable
) AS a;

GRANT SELECT ON batch.alert_evaluation TO monthend_runner, monthend_auditor;
