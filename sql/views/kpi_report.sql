-- KPIs of every batch: the document post-processing recorded in batch.kpi,
-- or, for a batch that has not been post-processed (running, failed,
-- cancelled), the figures as they are now (recorded_at NULL).
CREATE OR REPLACE VIEW batch.kpi_report AS
SELECT r.batch_id,
       r.period,
       r.status,
       k.recorded_at,
       coalesce(k.kpi, batch.compute_kpi(r.batch_id)) AS kpi
FROM batch.run AS r
LEFT JOIN batch.kpi AS k ON k.batch_id = r.batch_id;

GRANT SELECT ON batch.kpi_report TO monthend_runner, monthend_auditor;
