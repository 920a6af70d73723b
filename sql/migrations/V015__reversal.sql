-- Corrections by reversal. A reversal is a batch of its own kind: it mirrors
-- the entries of source rows a committed batch posted, one reversing entry for
-- each original entry, and once it commits those source rows are unposted and
-- the next run of their period may post them anew. A source row's postings are
-- numbered by generation: 0 is its first posting, g + 1 the posting after
-- generation g was reversed. So "a source row has at most one live posting"
-- (posted and not reversed) is kept by keys:
--   source_claim (period, source_type, source_id, generation)   one posting a generation
--   source_reversal (same key)                                   a posting reversed at most once
--   source_reversal -> source_claim                              only a posting is reversed
--   generation g + 1 exists only once generation g is reversed   (source_claim_follows_reversal)

CREATE TABLE gl.reversal_reason (
    code        text NOT NULL,
    description text NOT NULL,
    CONSTRAINT reversal_reason_pkey PRIMARY KEY (code)
);
INSERT INTO gl.reversal_reason (code, description) VALUES
    ('RULE_ERROR', 'A posting rule was wrong; the rows are posted again under the corrected rule'),
    ('SOURCE_ERROR', 'The source row was wrong; upstream corrects it with a new row'),
    ('DUPLICATE', 'The transaction was loaded twice upstream'),
    ('FX_RATE_ERROR', 'The period''s FX rate was wrong; the rows are posted again at the corrected rate'),
    ('OTHER', 'Explained in the note');

ALTER TABLE batch.run
    ADD COLUMN kind              text NOT NULL DEFAULT 'RUN',
    ADD COLUMN reverses_batch_id bigint,
    ADD COLUMN reversal_method   text,
    ADD COLUMN reversal_reason   text,
    ADD COLUMN reversal_note     text,
    ADD CONSTRAINT run_kind_check CHECK (kind IN ('RUN', 'REVERSAL')),
    ADD CONSTRAINT run_reverses_batch_fkey FOREIGN KEY (reverses_batch_id)
        REFERENCES batch.run (batch_id),
    ADD CONSTRAINT run_reversal_reason_fkey FOREIGN KEY (reversal_reason)
        REFERENCES gl.reversal_reason (code),
    -- side: debit and credit swap; sign: the amounts are negated.
    ADD CONSTRAINT run_reversal_method_check CHECK (reversal_method IN ('side', 'sign')),
    ADD CONSTRAINT run_reversal_fields_check CHECK (
        CASE kind WHEN 'REVERSAL'
            THEN reverses_batch_id IS NOT NULL AND reversal_method IS NOT NULL
                 AND reversal_reason IS NOT NULL AND reverses_batch_id <> batch_id
            ELSE reverses_batch_id IS NULL AND reversal_method IS NULL
                 AND reversal_reason IS NULL AND reversal_note IS NULL END);
-- Two reversals of one batch at once: the second start fails on this index.
CREATE UNIQUE INDEX run_one_active_reversal_per_batch_idx ON batch.run (reverses_batch_id)
    WHERE status NOT IN ('COMMITTED', 'CANCELLED');
CREATE INDEX run_reverses_batch_idx ON batch.run (reverses_batch_id)
    WHERE reverses_batch_id IS NOT NULL;

-- Postings by generation. The primary key is rebuilt once here (its index
-- gains the generation); claims already made are generation 0.
ALTER TABLE batch.source_claim
    ADD COLUMN generation smallint NOT NULL DEFAULT 0,
    ADD CONSTRAINT source_claim_generation_check CHECK (generation >= 0);
ALTER TABLE batch.source_claim DROP CONSTRAINT source_claim_pkey;
ALTER TABLE batch.source_claim
    ADD CONSTRAINT source_claim_pkey PRIMARY KEY (period, source_type, source_id, generation);

-- A row here reverses one posting (a claim of one generation) in a reversal
-- batch; it is reversed once that batch is COMMITTED. Written at the
-- reversal's pre-flight, like a run's claims.
CREATE TABLE batch.source_reversal (
    period      text     NOT NULL,
    source_type text     NOT NULL,
    source_id   bigint   NOT NULL,
    generation  smallint NOT NULL,
    batch_id    bigint   NOT NULL,
    -- 0-based position of the row's first reversing entry among its batch's entries.
    je_offset   bigint   NOT NULL,
    -- The posting's entries: je_count of them from original_je_id on (a
    -- posting's entries are consecutive), each mirrored by one reversing entry.
    original_je_id bigint  NOT NULL,
    je_count    integer  NOT NULL,
    CONSTRAINT source_reversal_pkey PRIMARY KEY (period, source_type, source_id, generation),
    CONSTRAINT source_reversal_claim_fkey FOREIGN KEY (period, source_type, source_id, generation)
        REFERENCES batch.source_claim (period, source_type, source_id, generation),
    CONSTRAINT source_reversal_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id),
    CONSTRAINT source_reversal_je_count_check CHECK (je_count >= 1)
);
CREATE INDEX source_reversal_batch_idx ON batch.source_reversal (batch_id, source_type, source_id);

-- The entry a reversing entry reverses. NULL on every other entry; adding a
-- nullable column touches no partition's rows.
ALTER TABLE gl.journal_entry_header ADD COLUMN reverses_je_id bigint;

-- Lines of a reversal by sign carry negative amounts. The parent now says that
-- a line's amounts share one sign; each batch's partition says which
-- (batch.create_batch_stage). The partitions already attached hold only runs:
-- they say "not negative", as the dropped parent CHECK did. NOT VALID: every
-- row there was checked by that stronger CHECK when it was written.
ALTER TABLE gl.journal_entry_line
    ADD CONSTRAINT journal_entry_line_one_sign_check CHECK (
        (debit >= 0 AND credit >= 0 AND functional_debit >= 0 AND functional_credit >= 0)
        OR (debit <= 0 AND credit <= 0 AND functional_debit <= 0 AND functional_credit <= 0))
        NOT VALID;
DO $$
DECLARE
    v_partition regclass;
BEGIN
    FOR v_partition IN
        SELECT t.relid FROM pg_partition_tree('gl.journal_entry_line') AS t WHERE t.isleaf
    LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (debit >= 0 AND credit >= 0 '
                       'AND functional_debit >= 0 AND functional_credit >= 0) NOT VALID',
                       v_partition, (SELECT c.relname FROM pg_class AS c
                                     WHERE c.oid = v_partition) || '_sign_check');
    END LOOP;
END
$$;
ALTER TABLE gl.journal_entry_line DROP CONSTRAINT journal_entry_line_amounts_check;

-- The source rows a reversal was asked to reverse (--source-ids); a reversal
-- of the whole batch has none here.
CREATE TABLE batch.reversal_selection (
    batch_id    bigint NOT NULL,
    source_type text   NOT NULL,
    source_id   bigint NOT NULL,
    CONSTRAINT reversal_selection_pkey PRIMARY KEY (batch_id, source_type, source_id),
    CONSTRAINT reversal_selection_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id)
);
