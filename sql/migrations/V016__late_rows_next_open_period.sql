-- Late rows posted in the next open period. A source row dated in a closed
-- period (CLOSED or PERMANENTLY_CLOSED) is, under late_row_policy
-- NEXT_OPEN_PERIOD, posted by the next run of the first OPEN period after its
-- own: its entries are dated that period's first day and carry the row's own
-- date as source_date. Its claim stays in the partition of its own period
-- (the period of its date), so the claim keys keep "at most one live posting
-- per source row" whichever period posts it; the posting batch lists those
-- periods in late_periods and cuts ranges per claims partition.

ALTER TABLE gl.setting
    DROP CONSTRAINT setting_late_row_policy_check,
    ADD CONSTRAINT setting_late_row_policy_check
        CHECK (late_row_policy IN ('DEAD_LETTER', 'NEXT_OPEN_PERIOD'));

-- The periods, other than its own, whose claims partitions hold claims of
-- this batch (late rows it posts). Empty for nearly every batch.
ALTER TABLE batch.run
    ADD COLUMN late_periods text[] NOT NULL DEFAULT '{}';

-- The claims partition a run's range reads (the batch's period, or the period
-- of the late rows it holds); NULL for a reversal's range, which reads the
-- reversal's rows in batch.source_reversal.
ALTER TABLE batch.range ADD COLUMN claim_period text;
UPDATE batch.range AS rg SET claim_period = r.period
  FROM batch.run AS r
 WHERE r.batch_id = rg.batch_id AND r.kind = 'RUN';

-- The source row's date, on an entry dated otherwise (a late row posted in a
-- later period); NULL when the entry is dated on its source row's date.
ALTER TABLE gl.journal_entry_header ADD COLUMN source_date date;
-- Staging tables of unfinished batches get it too, or they could not be
-- attached at commit.
DO $$
DECLARE
    v_table regclass;
BEGIN
    FOR v_table IN
        SELECT c.oid::regclass FROM pg_class AS c
        WHERE c.relnamespace = 'batch'::regnamespace AND c.relkind = 'r'
          AND c.relname LIKE 'stage\_journal\_entry\_header\_%'
    LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN source_date date', v_table);
    END LOOP;
END
$$;

-- Redefined (repeatable files) with the source date: the header's canonical
-- text gains it as an optional last field, and a range's lines carry it.
DROP FUNCTION IF EXISTS audit.canonical_header_text(bigint, text, date, text, bigint, text, bigint,
                                                    integer, char, numeric, text, numeric);
DROP FUNCTION IF EXISTS audit.canonical_header_text(bigint, text, date, text, bigint, text, bigint,
                                                    integer, char, numeric, text, numeric, bigint);
DROP FUNCTION IF EXISTS batch.range_journal_line(bigint, text, text, bigint, bigint, bigint, bigint);
