-- The committed batches a period-end read: its ledger ranges sum their
-- movements and its policy ranges their posted premium. The close check
-- period_end_posted calls the period-end stale when a batch of its period or
-- of an earlier one it did not read is committed, however close in time.
ALTER TABLE batch.run ADD COLUMN ledger_batches bigint[];
COMMENT ON COLUMN batch.run.ledger_batches IS
    'A PERIOD_END batch: the committed batches with entries, of the periods after '
    'opening_period up to its own, that its pre-flight cut ledger ranges from '
    '(NULL: a period-end pre-flighted before this column, judged by its start time).';
