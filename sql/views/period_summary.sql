-- One row a period, as `monthend period list` shows it: its status and the
-- latest transition (who, when, why), the journal-entry numbers it has used,
-- its batches, its open dead letters, its FX rates, and its seal once closed.
CREATE OR REPLACE VIEW gl.period_summary AS
SELECT ap.period,
       ap.status,
       ap.start_date,
       ap.end_date,
       ap.je_numbers_used,
       coalesce(r.committed, 0) AS batches_committed,
       coalesce(r.active, 0) AS batches_active,
       coalesce(d.open_rows, 0) AS open_dead_letters,
       (SELECT count(*) FROM gl.fx_rate AS fx WHERE fx.period = ap.period) AS fx_rates,
       (SELECT count(*) FROM gl.period_balance AS b WHERE b.period = ap.period) AS balance_rows,
       encode(ap.seal_digest, 'hex') AS seal_digest,
       ap.closed_at,
       ap.status_reason,
       ap.status_changed_at,
       ap.status_changed_by,
       ap.status_detail
FROM gl.accounting_period AS ap
LEFT JOIN (SELECT x.period,
                  count(*) FILTER (WHERE x.status = 'COMMITTED') AS committed,
                  count(*) FILTER (WHERE x.status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED'))
                      AS active
           FROM batch.run AS x GROUP BY x.period) AS r ON r.period = ap.period
LEFT JOIN (SELECT pd.period, count(*) AS open_rows
           FROM batch.period_dead_letter AS pd GROUP BY pd.period) AS d
       ON d.period = ap.period;

GRANT SELECT ON gl.period_summary TO monthend_runner, monthend_auditor;
