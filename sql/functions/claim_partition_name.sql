-- The one definition of the name of a period's partition of batch.source_claim
-- (in schema batch): 'source_claim_2025_01' for period '2025-01'. Created by
-- gl.ensure_period_partitions; written to by pre-flight, counted by
-- validation, archive and restore.
CREATE OR REPLACE FUNCTION batch.claim_partition_name(p_period text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN 'source_claim_' || replace(p_period, '-', '_');

GRANT EXECUTE ON FUNCTION batch.claim_partition_name(text) TO monthend_runner;
