-- For DBAs and monitoring: one row, the health score (100 less the penalties
-- of batch.health_check, never below 0), the worst status, and the reasons:
-- every check that is not OK, with its detail and action.
CREATE OR REPLACE VIEW batch.health_score AS
SELECT greatest(0, 100 - coalesce(sum(hc.penalty), 0))::integer AS score,
       CASE WHEN bool_or(hc.status = 'CRITICAL') THEN 'CRITICAL'
            WHEN bool_or(hc.status = 'WARNING') THEN 'WARNING'
            ELSE 'OK' END AS status,
       coalesce(jsonb_agg(jsonb_build_object(
                    'check', hc.check_name, 'status', hc.status, 'penalty', hc.penalty,
                    'value', hc.value, 'detail', hc.detail, 'action', hc.action)
                ORDER BY hc.penalty DESC, hc.check_name)
                FILTER (WHERE hc.status <> 'OK'), '[]'::jsonb) AS reasons
FROM batch.health_check AS hc;

GRANT SELECT ON batch.health_score TO monthend_runner, monthend_auditor;
