-- The ledger. Partitioned by month of je_date; each month is partitioned again
-- by batch, so that a batch becomes visible by attaching the table it was
-- staged in (a catalog change, not a copy of its rows).

CREATE TABLE gl.journal_entry_header (
    je_id         bigint  NOT NULL,
    je_number     text    NOT NULL,
    je_date       date    NOT NULL,
    period        text    NOT NULL,
    batch_id      bigint  NOT NULL,
    source_type   text    NOT NULL,
    source_id     bigint  NOT NULL,
    je_seq        integer NOT NULL,
    currency      char(3) NOT NULL,
    fx_rate       numeric NOT NULL,
    description   text    NOT NULL,
    -- The source row's amount, so a control total can be taken from the ledger alone.
    source_amount numeric NOT NULL,
    CONSTRAINT journal_entry_header_pkey PRIMARY KEY (je_id, je_date, batch_id),
    CONSTRAINT journal_entry_header_source_type_check
        CHECK (source_type IN ('PREMIUM', 'CLAIM')),
    CONSTRAINT journal_entry_header_fx_rate_check CHECK (fx_rate > 0)
) PARTITION BY RANGE (je_date);

CREATE TABLE gl.journal_entry_line (
    je_id             bigint  NOT NULL,
    je_date           date    NOT NULL,
    line_no           integer NOT NULL,
    account_code      text    NOT NULL,
    debit             numeric NOT NULL,
    credit            numeric NOT NULL,
    functional_debit  numeric NOT NULL,
    functional_credit numeric NOT NULL,
    batch_id          bigint  NOT NULL,
    CONSTRAINT journal_entry_line_amounts_check
        CHECK (debit >= 0 AND credit >= 0 AND functional_debit >= 0 AND functional_credit >= 0),
    CONSTRAINT journal_entry_line_side_check
        CHECK ((debit = 0 OR credit = 0) AND (functional_debit = 0 OR functional_credit = 0))
) PARTITION BY RANGE (je_date);

-- Lines are written in je_id order within each range, so a BRIN index finds a
-- journal entry's lines at a fraction of a B-tree's build and storage cost.
CREATE INDEX journal_entry_line_je_id_brin
    ON gl.journal_entry_line USING brin (je_id) WITH (pages_per_range = 16);

-- je_id blocks are handed out here, one block a batch, under a row lock.
CREATE TABLE gl.je_id_allocator (
    next_je_id bigint  NOT NULL,
    singleton  boolean NOT NULL DEFAULT true,
    CONSTRAINT je_id_allocator_pkey PRIMARY KEY (singleton),
    CONSTRAINT je_id_allocator_singleton_check CHECK (singleton),
    CONSTRAINT je_id_allocator_positive_check CHECK (next_je_id >= 1)
);
INSERT INTO gl.je_id_allocator (next_je_id) VALUES (1);
