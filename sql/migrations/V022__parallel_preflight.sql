-- Pre-flight by ranges. A run's pre-flight cuts the period's source rows into
-- ranges of source ids and leaves the batch PREFLIGHTING; the batch's workers
-- classify and claim them range by range, in parallel, like processing
-- (batch.preflight_range), and allocation then gives each range its block of
-- entries by a prefix sum over the ranges' counts.
--   stage              PREFLIGHT while the range's rows are being classified
--                      and claimed; PROCESS once claimed (the range is then
--                      processed as before).
--   claim_offset_base  what the je_offset of the range's claims counts from:
--                      a claim written by a range before the range knew its
--                      place in the batch counts from its range's first entry
--                      (claim_offset_base = je_offset); claims of batches
--                      pre-flighted in one statement count from the batch's
--                      first entry (0). The entry a claim starts is always
--                      je_id_base + claim_offset_base + the claim's je_offset.
ALTER TABLE batch.range
    ADD COLUMN stage text NOT NULL DEFAULT 'PROCESS',
    ADD COLUMN claim_offset_base bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT range_stage_check CHECK (stage IN ('PREFLIGHT', 'PROCESS'));

COMMENT ON COLUMN batch.range.stage IS
    'PREFLIGHT: its source rows are being classified and claimed; PROCESS: claimed, to be processed.';
COMMENT ON COLUMN batch.range.claim_offset_base IS
    'The claims of this range count their je_offset from here (0: from the batch''s first entry).';

ALTER TABLE batch.run
    DROP CONSTRAINT run_status_check,
    ADD CONSTRAINT run_status_check CHECK (status IN ('STARTED', 'PREFLIGHTING', 'PREFLIGHTED',
        'ALLOCATED', 'PROCESSED', 'VALIDATED', 'DRAFT', 'SUPERSEDED', 'COMMITTED', 'FAILED',
        'CANCELLED'));

-- When the range's pre-flight ran (its successful attempt), kept apart from
-- started_at/finished_at, which its processing then uses: together they show
-- how busy the batch's workers were through both phases.
ALTER TABLE batch.range
    ADD COLUMN preflight_started_at timestamptz,
    ADD COLUMN preflight_finished_at timestamptz;

-- A claim's range, found from the claim (the last range of its batch, claims
-- period and source type starting at or before it).
CREATE INDEX range_claim_lookup_idx
    ON batch.range (batch_id, claim_period, source_type, lo_source_id);
