-- Archives. A permanently closed period can be written to files
-- (`monthend archive`), verified there, and let go: its ledger partitions and
-- its claims partition are dropped in one transaction that makes it ARCHIVED
-- and appends PERIOD_ARCHIVED (with the digest of the archive's manifest) to
-- the audit chain. `monthend restore` brings it back from the files as
-- RESTORED (PERIOD_RESTORED); archiving a restored period drops it again
-- (PERIOD_ARCHIVED). The chain, the batches' records (batch.run, ranges,
-- totals, dead letters) and the period's balances and seal stay in the
-- database: they are small, the next period's close reads the balances, and
-- the chain is never archived away.
INSERT INTO gl.period_transition (from_status, to_status, event, command) VALUES
    ('PERMANENTLY_CLOSED', 'ARCHIVED', 'PERIOD_ARCHIVED', NULL),
    ('ARCHIVED',           'RESTORED', 'PERIOD_RESTORED', NULL),
    ('RESTORED',           'ARCHIVED', 'PERIOD_ARCHIVED', NULL);

-- How long a permanently closed period stays in the database: `monthend
-- archive --due` archives the periods that ended more than this many months
-- ago (84: the seven years of SOX record keeping).
ALTER TABLE gl.setting
    ADD COLUMN retention_months integer NOT NULL DEFAULT 84,
    ADD CONSTRAINT setting_retention_months_check CHECK (retention_months BETWEEN 1 AND 1200);

COMMENT ON COLUMN gl.setting.retention_months IS
    'Months a permanently closed period stays in the database before `monthend archive --due` archives it.';
