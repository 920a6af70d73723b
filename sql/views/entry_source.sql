-- What a batch's entries are made from, in one relation: the upstream source
-- rows (subledger.source_transaction) and the items of the period-end
-- batches (batch.period_end_item: source_type UPR or FX_REVALUATION,
-- source_id item_id). The range procedures read their independent control
-- totals from it, and a reversal the amounts of the postings it reverses. A
-- filter on source_type prunes the other branches.
CREATE OR REPLACE VIEW batch.entry_source AS
SELECT s.source_type, s.source_id, s.amount, s.currency
FROM subledger.source_transaction AS s
UNION ALL
SELECT i.item_kind, i.item_id, i.amount, i.currency
FROM batch.period_end_item AS i;

GRANT SELECT ON batch.entry_source TO monthend_runner, monthend_auditor;
