-- Draft runs. A run in mode DRAFT goes through every phase up to and including
-- pre-commit validation, then stops at status DRAFT: its entries sit in its
-- staging tables, outside the ledger, and the period's numbering is not
-- advanced. Finalizing it is the commit a run would have made (the same
-- attach, numbers and seal), allowed only while the inputs it was built from
-- are unchanged: the fingerprint it recorded at pre-flight
-- (batch.draft_input_fingerprint) is recomputed in the commit's transaction.
-- Discarding it removes it and everything it holds. A draft replaced by a
-- newer draft of its period is SUPERSEDED: released like a cancelled batch
-- (its claims and dead letters are gone, it cannot be finalized) but its
-- entries stay readable, so that the two drafts can be compared (monthend
-- diff --against-draft), until it is discarded or replaced in turn.

ALTER TABLE batch.run
    ADD COLUMN mode              text NOT NULL DEFAULT 'FINAL',
    ADD COLUMN input_fingerprint jsonb,
    ADD CONSTRAINT run_mode_check CHECK (mode IN ('FINAL', 'DRAFT')),
    -- Only a run is drafted; a reversal is reviewed before it is started.
    ADD CONSTRAINT run_draft_kind_check CHECK (mode = 'FINAL' OR kind = 'RUN'),
    DROP CONSTRAINT run_status_check,
    ADD CONSTRAINT run_status_check CHECK (status IN ('STARTED', 'PREFLIGHTED', 'ALLOCATED',
        'PROCESSED', 'VALIDATED', 'DRAFT', 'SUPERSEDED', 'COMMITTED', 'FAILED', 'CANCELLED')),
    ADD CONSTRAINT run_draft_status_check
        CHECK (status NOT IN ('DRAFT', 'SUPERSEDED') OR mode = 'DRAFT');

-- One unfinished batch a period, as before; a superseded draft is finished.
DROP INDEX batch.run_one_active_per_period_idx;
CREATE UNIQUE INDEX run_one_active_per_period_idx ON batch.run (period)
    WHERE status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED');

-- A draft holds its staging tables' space; one older than this raises a
-- health warning.
ALTER TABLE gl.setting
    ADD COLUMN draft_max_age interval NOT NULL DEFAULT '7 days',
    ADD CONSTRAINT setting_draft_max_age_check CHECK (draft_max_age > interval '0');

-- Redefined (procedures/start_run.sql) with the mode.
DROP PROCEDURE IF EXISTS batch.start_run(text, integer, integer, integer, bigint);

-- A built draft's staging tables are attached here, one partition a draft,
-- so that reports and diffs read every draft through one relation with plain
-- SQL (WHERE batch_id = the draft). Attaching and, at finalize, detaching are
-- catalog changes: the staging tables' batch_id CHECK proves the bound, and
-- these parents have no index or CHECK of their own to build or verify.
-- Nothing here is in the ledger.
CREATE TABLE batch.draft_journal_entry_header (LIKE gl.journal_entry_header)
    PARTITION BY LIST (batch_id);
CREATE TABLE batch.draft_journal_entry_line (LIKE gl.journal_entry_line)
    PARTITION BY LIST (batch_id);
GRANT SELECT ON batch.draft_journal_entry_header, batch.draft_journal_entry_line
    TO monthend_runner, monthend_auditor;

-- Redefined (sql/functions/trial_balance.sql) with a batch to read, a draft's
-- included.
DROP FUNCTION IF EXISTS gl.trial_balance(text);
-- And the transaction reports (sql/functions/*_transaction_report.sql).
DROP FUNCTION IF EXISTS gl.high_value_transaction_report(text, numeric);
DROP FUNCTION IF EXISTS gl.large_transaction_report(text, numeric);

-- Redefined (sql/functions/range_late_source_ids.sql) with the range's own
-- bounds as arguments, so that it reads one claims partition.
DROP FUNCTION IF EXISTS batch.range_late_source_ids(bigint);

-- An earlier form of batch.draft_input_fingerprint took the parts to compute.
DROP FUNCTION IF EXISTS batch.draft_input_fingerprint(bigint, text[]);
