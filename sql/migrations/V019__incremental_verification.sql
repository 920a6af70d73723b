-- Incremental verification reads only what is new since a kept head: the
-- chain's rows after it (audit.verify_chain gains the kept sequence number,
-- redefined in audit/verify_chain.sql) and the batches and periods sealed
-- after it. A batch's verification finds its seal and its ranges' RANGE_DONE
-- rows by batch: this index keeps that a lookup as the chain grows with the
-- years, instead of a scan of every row ever appended.
DROP FUNCTION IF EXISTS audit.verify_chain();

CREATE INDEX log_batch_event_idx ON audit.log (batch_id, event, seq)
    WHERE batch_id IS NOT NULL;
