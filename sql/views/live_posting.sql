-- The one definition of a live posting: a source row's claim (by a batch
-- committed or still being posted) that no committed reversal has reversed.
-- The claim keys allow at most one a row; a row without one is unposted (a
-- run may claim it, one generation on if a posting of it was reversed).
-- Filters on period, source_type and source_id reach the claims' primary key;
-- used as NOT EXISTS, it stays an anti-join.
CREATE OR REPLACE VIEW batch.live_posting AS
SELECT sc.period, sc.source_type, sc.source_id, sc.generation, sc.batch_id
FROM batch.source_claim AS sc
WHERE NOT EXISTS (SELECT FROM batch.source_reversal AS sr
                  JOIN batch.run AS rb ON rb.batch_id = sr.batch_id AND rb.status = 'COMMITTED'
                  WHERE sr.period = sc.period AND sr.source_type = sc.source_type
                    AND sr.source_id = sc.source_id AND sr.generation = sc.generation);

GRANT SELECT ON batch.live_posting TO monthend_runner, monthend_auditor;
