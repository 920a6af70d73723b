-- Open dead letters, one row a source row: the latest judgement of it.
CREATE OR REPLACE VIEW batch.dead_letter_current AS
SELECT DISTINCT ON (d.source_type, d.source_id)
       d.dead_letter_id, d.source_type, d.source_id, d.batch_id, d.reason_code, d.detail,
       d.amount, d.currency, d.created_at
FROM batch.dead_letter AS d
WHERE d.status = 'OPEN'
ORDER BY d.source_type, d.source_id, d.dead_letter_id DESC;

GRANT SELECT ON batch.dead_letter_current TO monthend_runner, monthend_auditor;
