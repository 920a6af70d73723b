-- Source tables written by upstream systems. A run never updates them; the
-- claim table (batch.source_claim) records which rows are posted.

CREATE TABLE subledger.premium_transaction (
    txn_id           bigint  NOT NULL,
    policy_id        bigint,
    payment_date     date,
    txn_type         text,
    line_of_business text,
    amount           numeric,
    currency         char(3),
    CONSTRAINT premium_transaction_pkey PRIMARY KEY (txn_id)
);
CREATE INDEX premium_transaction_payment_date_idx
    ON subledger.premium_transaction (payment_date);

CREATE TABLE subledger.claims_transaction (
    claim_id         bigint  NOT NULL,
    policy_id        bigint,
    claim_date       date,
    txn_type         text,
    line_of_business text,
    amount           numeric,
    currency         char(3),
    CONSTRAINT claims_transaction_pkey PRIMARY KEY (claim_id)
);
CREATE INDEX claims_transaction_claim_date_idx ON subledger.claims_transaction (claim_date);

-- Rows dated where no open period can take them (a closed period, or no
-- period at all) are noted as they arrive, so that the next run dead-letters
-- them instead of letting them wait forever unseen.
CREATE TABLE subledger.stray_transaction (
    source_type text        NOT NULL,
    source_id   bigint      NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT stray_transaction_pkey PRIMARY KEY (source_type, source_id)
);
