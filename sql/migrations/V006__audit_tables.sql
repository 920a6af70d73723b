-- The hash-chained audit log. Rows are appended through audit.append() only;
-- the triggers in audit/ set seq, prev_hash and hash and refuse every change.

CREATE TABLE audit.log (
    seq       bigint      NOT NULL,
    at        timestamptz NOT NULL,
    event     text        NOT NULL,
    batch_id  bigint,
    payload   jsonb       NOT NULL,
    actor     text        NOT NULL,
    prev_hash bytea       NOT NULL,
    hash      bytea       NOT NULL,
    CONSTRAINT log_pkey PRIMARY KEY (seq),
    CONSTRAINT log_hash_length_check CHECK (length(hash) = 32 AND length(prev_hash) = 32)
);

-- The chain's head, one row. Appenders lock it, so concurrent writers are
-- serialized by the row lock: no fork, and a rolled-back append leaves no gap.
CREATE TABLE audit.chain_head (
    seq       bigint  NOT NULL,
    hash      bytea   NOT NULL,
    singleton boolean NOT NULL DEFAULT true,
    CONSTRAINT chain_head_pkey PRIMARY KEY (singleton),
    CONSTRAINT chain_head_singleton_check CHECK (singleton)
);
-- The genesis link: sequence 0, hash of nothing agreed in advance.
INSERT INTO audit.chain_head (seq, hash) VALUES (0, sha256(''::bytea));
