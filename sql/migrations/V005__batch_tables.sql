-- Run control: batches, ranges, per-range totals, validation results, the
-- event timeline, dead letters, and the claims that mark source rows posted.

CREATE TABLE batch.run (
    batch_id          bigint GENERATED ALWAYS AS IDENTITY,
    period            text        NOT NULL,
    status            text        NOT NULL DEFAULT 'STARTED',
    workers           integer     NOT NULL,
    range_size        integer     NOT NULL,
    max_attempts      integer     NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at       timestamptz,
    started_by        text        NOT NULL DEFAULT session_user,
    -- Filled in by the phases as they finish.
    source_rows       bigint,
    source_amount     numeric,
    claimed_rows      bigint,
    dead_letter_rows  bigint,
    je_count          bigint,
    line_count        bigint,
    je_id_base        bigint,
    je_number_base    bigint,
    range_count       integer,
    digest            bytea,
    phase_seconds     jsonb       NOT NULL DEFAULT '{}',
    error             text,
    -- The status a failed batch had reached; resume continues from there.
    failed_status     text,
    CONSTRAINT run_pkey PRIMARY KEY (batch_id),
    CONSTRAINT run_period_fkey FOREIGN KEY (period) REFERENCES gl.accounting_period (period),
    CONSTRAINT run_status_check CHECK (status IN ('STARTED', 'PREFLIGHTED', 'ALLOCATED',
        'PROCESSED', 'VALIDATED', 'COMMITTED', 'FAILED', 'CANCELLED')),
    CONSTRAINT run_workers_check CHECK (workers BETWEEN 1 AND 1000),
    CONSTRAINT run_range_size_check CHECK (range_size >= 1),
    CONSTRAINT run_max_attempts_check CHECK (max_attempts >= 1)
);
-- One unfinished batch a period: a second start fails on this index.
CREATE UNIQUE INDEX run_one_active_per_period_idx ON batch.run (period)
    WHERE status NOT IN ('COMMITTED', 'CANCELLED');

CREATE TABLE batch.range (
    range_id              bigint GENERATED ALWAYS AS IDENTITY,
    batch_id              bigint      NOT NULL,
    range_no              integer     NOT NULL,
    source_type           text        NOT NULL,
    lo_source_id          bigint      NOT NULL,
    hi_source_id          bigint      NOT NULL,
    row_count             integer     NOT NULL,
    je_offset             bigint      NOT NULL,
    je_count              integer     NOT NULL,
    status                text        NOT NULL DEFAULT 'PENDING',
    attempts              integer     NOT NULL DEFAULT 0,
    worker                text,
    worker_pid            integer,
    worker_backend_start  timestamptz,
    retry_after           timestamptz,
    started_at            timestamptz,
    finished_at           timestamptz,
    line_count            integer,
    digest                bytea,
    last_error            text,
    CONSTRAINT range_pkey PRIMARY KEY (range_id),
    CONSTRAINT range_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id),
    CONSTRAINT range_batch_range_no_key UNIQUE (batch_id, range_no),
    CONSTRAINT range_status_check CHECK (status IN ('PENDING', 'RUNNING', 'DONE', 'FAILED')),
    CONSTRAINT range_bounds_check CHECK (lo_source_id <= hi_source_id)
);

CREATE TABLE batch.range_total (
    range_id          bigint  NOT NULL,
    currency          char(3) NOT NULL,
    source_rows       integer NOT NULL,
    source_amount     numeric NOT NULL,
    debit             numeric NOT NULL,
    credit            numeric NOT NULL,
    functional_debit  numeric NOT NULL,
    functional_credit numeric NOT NULL,
    CONSTRAINT range_total_pkey PRIMARY KEY (range_id, currency),
    CONSTRAINT range_total_range_fkey FOREIGN KEY (range_id) REFERENCES batch.range (range_id)
);

CREATE TABLE batch.validation_result (
    validation_id bigint GENERATED ALWAYS AS IDENTITY,
    batch_id      bigint      NOT NULL,
    range_id      bigint,
    phase         text        NOT NULL,
    check_name    text        NOT NULL,
    status        text        NOT NULL,
    expected      text,
    actual        text,
    checked_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT validation_result_pkey PRIMARY KEY (validation_id),
    CONSTRAINT validation_result_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id),
    CONSTRAINT validation_result_status_check CHECK (status IN ('PASS', 'FAIL'))
);
CREATE INDEX validation_result_batch_idx ON batch.validation_result (batch_id);

CREATE TABLE batch.event (
    event_id bigint GENERATED ALWAYS AS IDENTITY,
    batch_id bigint,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    level    text        NOT NULL DEFAULT 'INFO',
    kind     text        NOT NULL,
    message  text        NOT NULL,
    detail   jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT event_pkey PRIMARY KEY (event_id),
    CONSTRAINT event_level_check CHECK (level IN ('INFO', 'WARNING', 'CRITICAL', 'ERROR'))
);
CREATE INDEX event_batch_idx ON batch.event (batch_id, event_id);

CREATE TABLE batch.dead_letter (
    dead_letter_id   bigint GENERATED ALWAYS AS IDENTITY,
    source_type      text        NOT NULL,
    source_id        bigint      NOT NULL,
    batch_id         bigint      NOT NULL,
    reason_code      text        NOT NULL,
    detail           text        NOT NULL,
    amount           numeric,
    currency         text,
    status           text        NOT NULL DEFAULT 'OPEN',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_by_batch bigint,
    CONSTRAINT dead_letter_pkey PRIMARY KEY (dead_letter_id),
    CONSTRAINT dead_letter_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id),
    CONSTRAINT dead_letter_source_batch_key UNIQUE (source_type, source_id, batch_id),
    CONSTRAINT dead_letter_status_check CHECK (status IN ('OPEN', 'RESOLVED')),
    CONSTRAINT dead_letter_reason_code_check CHECK (reason_code IN (
        'AMOUNT_NULL', 'AMOUNT_ZERO', 'AMOUNT_NEGATIVE', 'AMOUNT_PRECISION',
        'CURRENCY_UNKNOWN', 'TXN_TYPE_UNKNOWN', 'LINE_OF_BUSINESS_UNKNOWN',
        'POLICY_MISSING', 'FX_RATE_MISSING', 'BALANCING_NEGATIVE',
        'DATE_MISSING', 'DATE_OUTSIDE_PERIOD', 'PERIOD_CLOSED'))
);
CREATE INDEX dead_letter_open_idx ON batch.dead_letter (source_type, source_id)
    WHERE status = 'OPEN';
CREATE INDEX dead_letter_batch_idx ON batch.dead_letter (batch_id);

-- Control totals of the source rows a batch took in, taken at pre-flight from
-- the same snapshot that classified them: pre-commit validation proves that
-- posted + dead-lettered equals these, per source type and currency.
CREATE TABLE batch.control_total (
    batch_id      bigint  NOT NULL,
    source_type   text    NOT NULL,
    currency      text    NOT NULL,
    source_rows   bigint  NOT NULL,
    source_amount numeric NOT NULL,
    CONSTRAINT control_total_pkey PRIMARY KEY (batch_id, source_type, currency),
    CONSTRAINT control_total_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id)
);

-- A row here claims a source row for a batch; it is posted once that batch is
-- COMMITTED. Partitioned by the period of the source row's date: a run only
-- ever reads its own period's claims. Source rows are frozen once claimed
-- (trigger on the source tables), so a row's period never changes and the
-- primary key makes "posted at most once, ever" a database guarantee.
CREATE TABLE batch.source_claim (
    period      text    NOT NULL,
    source_type text    NOT NULL,
    source_id   bigint  NOT NULL,
    batch_id    bigint  NOT NULL,
    -- 0-based position of the row's first journal entry among its batch's entries.
    je_offset   bigint  NOT NULL,
    CONSTRAINT source_claim_pkey PRIMARY KEY (period, source_type, source_id)
) PARTITION BY LIST (period);
