-- Which open dead letters a batch will resolve when it commits: the rows it
-- claimed that earlier batches had dead-lettered. Noted at pre-flight, which
-- reads those rows anyway, so the commit updates exactly these instead of
-- probing every open dead letter of every period (a cost that would grow with
-- the unresolved backlog, not with the batch).
CREATE TABLE batch.dead_letter_resolution (
    batch_id       bigint NOT NULL,
    dead_letter_id bigint NOT NULL,
    CONSTRAINT dead_letter_resolution_pkey PRIMARY KEY (batch_id, dead_letter_id),
    CONSTRAINT dead_letter_resolution_batch_fkey FOREIGN KEY (batch_id)
        REFERENCES batch.run (batch_id),
    -- A cancelled batch deletes its own dead letters; a resolution noted by a
    -- batch of another period goes with them.
    CONSTRAINT dead_letter_resolution_dead_letter_fkey FOREIGN KEY (dead_letter_id)
        REFERENCES batch.dead_letter (dead_letter_id) ON DELETE CASCADE
);
CREATE INDEX dead_letter_resolution_dead_letter_idx
    ON batch.dead_letter_resolution (dead_letter_id);
