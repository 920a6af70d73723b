-- Reference data of the ledger: chart of accounts, currencies, FX rates,
-- accounting periods, lines of business and the posting rules.

CREATE DOMAIN gl.period_code AS text
    CONSTRAINT period_code_format_check CHECK (VALUE ~ '^[0-9]{4}-(0[1-9]|1[0-2])$');

CREATE TABLE gl.account (
    account_code text NOT NULL,
    name         text NOT NULL,
    account_type text NOT NULL,
    CONSTRAINT account_pkey PRIMARY KEY (account_code),
    CONSTRAINT account_type_check
        CHECK (account_type IN ('ASSET', 'LIABILITY', 'EQUITY', 'REVENUE', 'EXPENSE'))
);

CREATE TABLE gl.currency (
    code        char(3) NOT NULL,
    name        text    NOT NULL,
    minor_units integer NOT NULL,
    CONSTRAINT currency_pkey PRIMARY KEY (code),
    CONSTRAINT currency_code_check CHECK (code ~ '^[A-Z]{3}$'),
    CONSTRAINT currency_minor_units_check CHECK (minor_units BETWEEN 0 AND 4)
);

-- One row: the functional currency of the ledger (the contract's default is USD).
CREATE TABLE gl.setting (
    functional_currency char(3) NOT NULL,
    singleton           boolean NOT NULL DEFAULT true,
    CONSTRAINT setting_pkey PRIMARY KEY (singleton),
    CONSTRAINT setting_singleton_check CHECK (singleton),
    CONSTRAINT setting_functional_currency_fkey
        FOREIGN KEY (functional_currency) REFERENCES gl.currency (code)
);

CREATE TABLE gl.accounting_period (
    period          gl.period_code NOT NULL,
    start_date      date           NOT NULL,
    end_date        date           NOT NULL,
    status          text           NOT NULL DEFAULT 'OPEN',
    -- How many journal-entry numbers committed batches of the period have used:
    -- the next batch numbers from here, so the period stays gapless.
    je_numbers_used bigint         NOT NULL DEFAULT 0,
    closed_at       timestamptz,
    CONSTRAINT accounting_period_pkey PRIMARY KEY (period),
    CONSTRAINT accounting_period_status_check CHECK (status IN ('OPEN', 'CLOSED')),
    CONSTRAINT accounting_period_bounds_check
        CHECK (start_date = to_date(period, 'YYYY-MM')
               AND end_date = (start_date + interval '1 month - 1 day')::date),
    CONSTRAINT accounting_period_numbers_check CHECK (je_numbers_used >= 0)
);

CREATE TABLE gl.fx_rate (
    period   gl.period_code NOT NULL,
    currency char(3)        NOT NULL,
    rate     numeric        NOT NULL,
    CONSTRAINT fx_rate_pkey PRIMARY KEY (period, currency),
    CONSTRAINT fx_rate_currency_fkey FOREIGN KEY (currency) REFERENCES gl.currency (code),
    CONSTRAINT fx_rate_positive_check CHECK (rate > 0)
);

CREATE TABLE gl.line_of_business (
    code text NOT NULL,
    name text NOT NULL,
    CONSTRAINT line_of_business_pkey PRIMARY KEY (code)
);

-- A journal-entry template: one entry a source transaction of this type produces.
CREATE TABLE gl.journal_template (
    source_type text    NOT NULL,
    txn_type    text    NOT NULL,
    je_seq      integer NOT NULL,
    description text    NOT NULL,
    CONSTRAINT journal_template_pkey PRIMARY KEY (source_type, txn_type, je_seq),
    CONSTRAINT journal_template_source_type_check CHECK (source_type IN ('PREMIUM', 'CLAIM')),
    CONSTRAINT journal_template_je_seq_check CHECK (je_seq >= 1)
);

CREATE TABLE gl.posting_rule (
    source_type  text    NOT NULL,
    txn_type     text    NOT NULL,
    je_seq       integer NOT NULL,
    line_no      integer NOT NULL,
    account_code text    NOT NULL,
    side         char(1) NOT NULL,
    ratio        numeric,
    CONSTRAINT posting_rule_pkey PRIMARY KEY (source_type, txn_type, je_seq, line_no),
    CONSTRAINT posting_rule_template_fkey FOREIGN KEY (source_type, txn_type, je_seq)
        REFERENCES gl.journal_template (source_type, txn_type, je_seq),
    CONSTRAINT posting_rule_account_fkey
        FOREIGN KEY (account_code) REFERENCES gl.account (account_code),
    CONSTRAINT posting_rule_side_check CHECK (side IN ('D', 'C')),
    CONSTRAINT posting_rule_ratio_check CHECK (ratio IS NULL OR ratio > 0),
    CONSTRAINT posting_rule_line_no_check CHECK (line_no >= 1)
);

-- At most one balancing line a template; "at least one" is the deferred trigger's job.
CREATE UNIQUE INDEX posting_rule_one_balancing_line_idx
    ON gl.posting_rule (source_type, txn_type, je_seq) WHERE ratio IS NULL;
