-- Both source tables as one relation, in the ledger's vocabulary. A filter on
-- source_type prunes the other branch; filters on source_id and txn_date reach
-- each table's own indexes.
CREATE OR REPLACE VIEW subledger.source_transaction AS
SELECT 'PREMIUM'::text    AS source_type,
       p.txn_id           AS source_id,
       p.policy_id,
       p.payment_date     AS txn_date,
       p.txn_type,
       p.line_of_business,
       p.amount,
       p.currency
FROM subledger.premium_transaction AS p
UNION ALL
SELECT 'CLAIM'::text,
       c.claim_id,
       c.policy_id,
       c.claim_date,
       c.txn_type,
       c.line_of_business,
       c.amount,
       c.currency
FROM subledger.claims_transaction AS c;

GRANT SELECT ON subledger.source_transaction TO monthend_runner, monthend_auditor;
