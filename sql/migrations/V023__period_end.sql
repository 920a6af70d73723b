-- Period-end entries of an insurer. Premium is posted as written; the
-- unearned premium reserve (UPR) moves only by a batch of kind PERIOD_END,
-- which computes the UPR of every policy in force at the period's end by
-- daily pro rata (gl.upr_detail) and books its change per line of business
-- and currency. A PERIOD_END batch goes through the phases of a run: its
-- policies are cut into ranges that the workers compute in parallel, its
-- entries are numbered, validated, attached and sealed like any other.

-- Policies, written by upstream systems like the transaction tables. A premium
-- row names its policy; one whose policy is unknown or dated outside the
-- policy's term is dead-lettered (POLICY_UNKNOWN, OUTSIDE_POLICY_TERM).
-- The term is [inception_date, expiry_date): in force on inception_date, no
-- longer on expiry_date.
CREATE TABLE subledger.policy (
    policy_id        bigint NOT NULL,
    line_of_business text   NOT NULL,
    inception_date   date   NOT NULL,
    expiry_date      date   NOT NULL,
    CONSTRAINT policy_pkey PRIMARY KEY (policy_id),
    CONSTRAINT policy_term_check CHECK (expiry_date > inception_date)
);
GRANT SELECT ON subledger.policy TO monthend_runner, monthend_auditor;

-- A range of policies reads its premium rows by policy.
CREATE INDEX premium_transaction_policy_idx
    ON subledger.premium_transaction (policy_id, payment_date);

ALTER TABLE batch.dead_letter
    DROP CONSTRAINT dead_letter_reason_code_check,
    ADD CONSTRAINT dead_letter_reason_code_check CHECK (reason_code IN (
        'AMOUNT_NULL', 'AMOUNT_ZERO', 'AMOUNT_NEGATIVE', 'AMOUNT_PRECISION',
        'CURRENCY_UNKNOWN', 'TXN_TYPE_UNKNOWN', 'LINE_OF_BUSINESS_UNKNOWN',
        'POLICY_MISSING', 'POLICY_UNKNOWN', 'OUTSIDE_POLICY_TERM', 'FX_RATE_MISSING',
        'BALANCING_NEGATIVE', 'DATE_MISSING', 'DATE_OUTSIDE_PERIOD', 'PERIOD_CLOSED'));

-- Monetary items are revalued at the closing rate (IAS 21); the UPR and
-- deferred acquisition costs are not.
ALTER TABLE gl.account ADD COLUMN is_monetary boolean NOT NULL DEFAULT false;
UPDATE gl.account SET is_monetary = true
 WHERE account_code IN ('1000', '1200', '1300', '2200', '2300', '2400', '2500');

INSERT INTO gl.account (account_code, name, account_type) VALUES
    ('4050', 'Written premium',                          'REVENUE'),
    ('4060', 'Change in unearned premium reserve',       'REVENUE'),
    ('4200', 'Ceding commission',                        'REVENUE'),
    ('7100', 'Unrealized FX gain',                       'REVENUE'),
    ('7200', 'Unrealized FX loss',                       'EXPENSE');

-- The accounts the period-end entries book to, by role (configurable, like
-- the posting rules):
--   UPR         the unearned premium reserve (a liability)
--   UPR_CHANGE  the change in it, the P&L side: earned premium of a month is
--               written premium less this change
--   FX_GAIN, FX_LOSS  unrealized gains and losses of an FX revaluation
CREATE TABLE gl.period_end_account (
    role         text NOT NULL,
    account_code text NOT NULL,
    CONSTRAINT period_end_account_pkey PRIMARY KEY (role),
    CONSTRAINT period_end_account_role_check
        CHECK (role IN ('UPR', 'UPR_CHANGE', 'FX_GAIN', 'FX_LOSS')),
    CONSTRAINT period_end_account_account_fkey
        FOREIGN KEY (account_code) REFERENCES gl.account (account_code)
);
INSERT INTO gl.period_end_account (role, account_code) VALUES
    ('UPR', '2100'), ('UPR_CHANGE', '4060'), ('FX_GAIN', '7100'), ('FX_LOSS', '7200');
GRANT SELECT ON gl.period_end_account TO monthend_runner, monthend_auditor;

-- Premium is posted as written. The shipped rules give a premium row three
-- entries of three lines, as before, and none touches the UPR (2100):
--   1 receivable (premium and the premium tax charged) / written premium / tax payable
--   2 commission expense and deferred acquisition costs / commission payable
--   3 ceded premium / ceding commission / reinsurance premium payable
-- A cancellation mirrors them. Entries already posted keep the rules they
-- were posted under.
DELETE FROM gl.posting_rule WHERE source_type = 'PREMIUM';
INSERT INTO gl.posting_rule (source_type, txn_type, je_seq, line_no, account_code, side, ratio)
SELECT 'PREMIUM', t.txn_type, r.je_seq, r.line_no, r.account_code, r.side, r.ratio
FROM (VALUES ('NEW_BUSINESS'), ('RENEWAL'), ('ENDORSEMENT')) AS t (txn_type)
CROSS JOIN (VALUES
    (1, 1, '1200', 'D', NULL),     -- receivable: premium and the tax charged on it
    (1, 2, '4050', 'C', 1.0),      -- written premium
    (1, 3, '2300', 'C', 0.03),     -- premium tax payable
    (2, 1, '5200', 'D', 0.15),     -- commission expense
    (2, 2, '1400', 'D', 0.02),     -- acquisition costs deferred
    (2, 3, '2400', 'C', NULL),     -- payable to the broker
    (3, 1, '4100', 'D', 0.10),     -- premium ceded to the quota-share reinsurer
    (3, 2, '4200', 'C', 0.025),    -- ceding commission
    (3, 3, '2500', 'C', NULL)      -- payable to the reinsurer
) AS r (je_seq, line_no, account_code, side, ratio);
INSERT INTO gl.posting_rule (source_type, txn_type, je_seq, line_no, account_code, side, ratio)
VALUES
    ('PREMIUM', 'CANCELLATION', 1, 1, '4050', 'D', 1.0),
    ('PREMIUM', 'CANCELLATION', 1, 2, '2300', 'D', 0.03),
    ('PREMIUM', 'CANCELLATION', 1, 3, '1200', 'C', NULL),
    ('PREMIUM', 'CANCELLATION', 2, 1, '2400', 'D', 0.15),
    ('PREMIUM', 'CANCELLATION', 2, 2, '1400', 'C', 0.02),
    ('PREMIUM', 'CANCELLATION', 2, 3, '5200', 'C', NULL),
    ('PREMIUM', 'CANCELLATION', 3, 1, '2500', 'D', NULL),
    ('PREMIUM', 'CANCELLATION', 3, 2, '4200', 'D', 0.025),
    ('PREMIUM', 'CANCELLATION', 3, 3, '4100', 'C', 0.10);

UPDATE gl.journal_template SET description = 'Premium ceded to the reinsurer'
 WHERE source_type = 'PREMIUM' AND je_seq = 3
   AND txn_type IN ('NEW_BUSINESS', 'RENEWAL', 'ENDORSEMENT');
UPDATE gl.journal_template SET description = 'Ceded premium returned by the reinsurer'
 WHERE source_type = 'PREMIUM' AND je_seq = 3 AND txn_type = 'CANCELLATION';

-- The rate a foreign-currency monetary balance is revalued at, at the
-- period's end: distinct from gl.fx_rate, the rate its transactions post at.
CREATE TABLE gl.fx_closing_rate (
    period   gl.period_code NOT NULL,
    currency char(3)        NOT NULL,
    rate     numeric        NOT NULL,
    CONSTRAINT fx_closing_rate_pkey PRIMARY KEY (period, currency),
    CONSTRAINT fx_closing_rate_period_fkey
        FOREIGN KEY (period) REFERENCES gl.accounting_period (period),
    CONSTRAINT fx_closing_rate_currency_fkey
        FOREIGN KEY (currency) REFERENCES gl.currency (code),
    CONSTRAINT fx_closing_rate_positive_check CHECK (rate > 0)
);
GRANT SELECT ON gl.fx_closing_rate TO monthend_runner, monthend_auditor;

ALTER TABLE gl.setting
    ADD COLUMN period_end_required boolean NOT NULL DEFAULT true;

-- The UPR of every policy in force at a period's end, per currency of its
-- premium, as the period-end batch that computed it found it. One partition
-- a committed period-end batch, attached at its commit (the batch's ranges
-- write its staging table, batch.stage_upr_detail_<batch>); a period whose
-- period-end was reversed and made again has the detail of both batches: the
-- period's current one is the batch gl.period_end_batch names.
CREATE TABLE gl.upr_detail (
    period                     gl.period_code NOT NULL,
    policy_id                  bigint         NOT NULL,
    line_of_business           text           NOT NULL,
    currency                   char(3)        NOT NULL,
    written_to_date            numeric        NOT NULL,
    written_to_date_functional numeric        NOT NULL,
    term_days                  integer        NOT NULL,
    unexpired_days             integer        NOT NULL,
    upr                        numeric        NOT NULL,
    upr_functional             numeric        NOT NULL,
    batch_id                   bigint         NOT NULL,
    CONSTRAINT upr_detail_days_check
        CHECK (unexpired_days >= 1 AND unexpired_days <= term_days)
) PARTITION BY LIST (batch_id);
GRANT SELECT ON gl.upr_detail TO monthend_runner, monthend_auditor;

-- What a period-end batch books, one journal entry an item: the change of
-- the UPR of one line of business and currency, or the revaluation of one
-- monetary account's balance in one foreign currency. The items are the
-- batch's source rows (source_type UPR or FX_REVALUATION, source_id
-- item_id, batch_id * 1,000,000 + the item's place in its batch): claimed
-- in batch.source_claim like transactions, so that the
-- reversal machinery reverses them as it reverses postings.
--   amount             the entry's amount in the item's currency (an FX
--                      revaluation moves the functional currency only: 0)
--   functional_amount  the same in the functional currency
--   debit_account, credit_account  the entry's two lines: a positive amount
--                      is debited to the first and credited to the second, a
--                      negative one the other way (so every line's amounts
--                      are not negative)
--   fx_rate            the entry's rate (the closing rate of a revaluation)
-- The basis columns say where the amount comes from (opening and closing
-- UPR; the balance, its carried functional value and the closing rate).
CREATE TABLE batch.period_end_item (
    item_id           bigint  NOT NULL,
    batch_id          bigint  NOT NULL,
    item_kind         text    NOT NULL,
    line_of_business  text,
    currency          char(3) NOT NULL,
    debit_account     text    NOT NULL,
    credit_account    text    NOT NULL,
    amount            numeric NOT NULL,
    functional_amount numeric NOT NULL,
    fx_rate           numeric NOT NULL,
    description       text    NOT NULL,
    basis             jsonb   NOT NULL,
    CONSTRAINT period_end_item_pkey PRIMARY KEY (item_id),
    CONSTRAINT period_end_item_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id),
    CONSTRAINT period_end_item_kind_check CHECK (item_kind IN ('UPR', 'FX_REVALUATION'))
);
CREATE INDEX period_end_item_batch_idx ON batch.period_end_item (batch_id, item_kind, item_id);
GRANT SELECT ON batch.period_end_item TO monthend_runner, monthend_auditor;

-- The foreign-currency balances of the monetary accounts at a period-end
-- batch's period end, with their revaluation (one row per account and
-- currency with a balance).
CREATE TABLE batch.fx_revaluation_detail (
    batch_id           bigint  NOT NULL,
    account_code       text    NOT NULL,
    currency           char(3) NOT NULL,
    balance            numeric NOT NULL,
    functional_carried numeric NOT NULL,
    closing_rate       numeric NOT NULL,
    functional_revalued numeric NOT NULL,
    gain               numeric NOT NULL,
    CONSTRAINT fx_revaluation_detail_pkey PRIMARY KEY (batch_id, account_code, currency),
    CONSTRAINT fx_revaluation_detail_batch_fkey FOREIGN KEY (batch_id)
        REFERENCES batch.run (batch_id)
);
GRANT SELECT ON batch.fx_revaluation_detail TO monthend_runner, monthend_auditor;

-- A ledger movement summed by a period-end's ranges over the ledger: per
-- range, monetary account and foreign currency.
CREATE TABLE batch.fx_movement_part (
    range_id          bigint  NOT NULL,
    account_code      text    NOT NULL,
    currency          char(3) NOT NULL,
    debit             numeric NOT NULL,
    credit            numeric NOT NULL,
    functional_debit  numeric NOT NULL,
    functional_credit numeric NOT NULL,
    CONSTRAINT fx_movement_part_pkey PRIMARY KEY (range_id, account_code, currency)
);

-- The journal entries of the period-end items.
ALTER TABLE gl.journal_entry_header
    DROP CONSTRAINT journal_entry_header_source_type_check,
    ADD CONSTRAINT journal_entry_header_source_type_check
        CHECK (source_type IN ('PREMIUM', 'CLAIM', 'UPR', 'FX_REVALUATION')) NOT VALID;

-- Batch kinds: a period-end, and the automatic reversal of its FX
-- revaluation on the first day of the next period (a reversal made by the
-- machine rather than asked for).
INSERT INTO gl.reversal_reason (code, description) VALUES
    ('PERIOD_END_REVALUATION',
     'Automatic reversal, on the first day of the next period, of a period-end FX revaluation');
ALTER TABLE batch.run
    DROP CONSTRAINT run_kind_check,
    ADD CONSTRAINT run_kind_check
        CHECK (kind IN ('RUN', 'REVERSAL', 'PERIOD_END', 'AUTO_REVERSAL')),
    DROP CONSTRAINT run_reversal_fields_check,
    ADD CONSTRAINT run_reversal_fields_check CHECK (
        CASE WHEN kind IN ('REVERSAL', 'AUTO_REVERSAL')
            THEN reverses_batch_id IS NOT NULL AND reversal_method IS NOT NULL
                 AND reversal_reason IS NOT NULL AND reverses_batch_id <> batch_id
            ELSE reverses_batch_id IS NULL AND reversal_method IS NULL
                 AND reversal_reason IS NULL AND reversal_note IS NULL END),
    DROP CONSTRAINT run_draft_kind_check,
    ADD CONSTRAINT run_draft_kind_check CHECK (mode = 'FINAL' OR kind IN ('RUN', 'PERIOD_END'));

-- The ranges of a period-end before its entries: POLICY ranges compute the
-- UPR of their policies, LEDGER ranges sum a span of the ledger's monetary
-- movements; both in stage PREFLIGHT, like a run's pre-flight ranges.
COMMENT ON COLUMN batch.range.source_type IS
    'PREMIUM or CLAIM (a run''s, a reversal''s); UPR or FX_REVALUATION (a period-end''s entries); '
    'POLICY or LEDGER (a period-end''s pre-flight ranges: policy ids, je_ids of one batch).';
ALTER TABLE batch.range ADD COLUMN ledger_batch_id bigint;
ALTER TABLE batch.run ADD COLUMN opening_period text;
COMMENT ON COLUMN batch.run.opening_period IS
    'A period-end''s: the period whose closing balances its FX revaluation starts from '
    '(batch.period_end_opening_period at its pre-flight; NULL: from the first batch).';
COMMENT ON COLUMN batch.range.ledger_batch_id IS
    'A LEDGER range: the batch whose entries lo_source_id..hi_source_id (je_ids) it sums.';
