-- The count of a run's claims moves from allocation into validation's pieces:
-- each claims partition the run wrote to (its period's, and those of the late
-- rows it took) is counted in block ranges beside the index builds, and
-- batch.validate_batch checks that the batch's claims add up to the rows its
-- ranges claimed. Allocation, which every range waits for, no longer reads
-- the claims.
ALTER TABLE batch.validation_piece
    ADD COLUMN claim_period text,
    DROP CONSTRAINT validation_piece_table_check,
    ADD CONSTRAINT validation_piece_table_check CHECK (stage_table IN ('header', 'line', 'claim')),
    ADD CONSTRAINT validation_piece_claim_check CHECK (
        (stage_table = 'claim') = (claim_period IS NOT NULL)
        AND (stage_table <> 'claim' OR task = 'count'));
COMMENT ON COLUMN batch.validation_piece.stage_table IS
    'header, line: the batch''s staging table; claim: the claims partition of claim_period.';
COMMENT ON COLUMN batch.validation_piece.claim_period IS
    'A claim piece: the period whose partition of batch.source_claim it counts the batch''s claims in.';
COMMENT ON COLUMN batch.validation_piece.task IS
    'index: the table''s index for ATTACH (header: the primary key; line: the BRIN on je_id), '
    'then ANALYZE; count: the rows in blocks first_block .. end_block - 1 (of a claims '
    'partition, the batch''s claims there).';
