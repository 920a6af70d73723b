-- Open dead letters with the period of their source row's date, as the row is
-- now (an upstream fix of the date moves it): the dead letters a period's
-- close must account for. Rows with no date, or dated where no period is
-- defined, belong to no period (period NULL).
CREATE OR REPLACE VIEW batch.period_dead_letter AS
SELECT ap.period, d.dead_letter_id, d.source_type, d.source_id, d.batch_id, d.reason_code,
       d.amount, d.currency, s.txn_date
FROM batch.dead_letter_current AS d
LEFT JOIN subledger.source_transaction AS s
       ON s.source_type = d.source_type AND s.source_id = d.source_id
LEFT JOIN gl.accounting_period AS ap ON s.txn_date BETWEEN ap.start_date AND ap.end_date;

GRANT SELECT ON batch.period_dead_letter TO monthend_runner, monthend_auditor;
