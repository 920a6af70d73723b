-- Seal version 2: a Merkle tree. Each range's seal becomes the RFC 6962
-- Merkle Tree Hash over its journal entries (one leaf an entry), and the
-- batch's over its range roots, so one entry can be proved against the sealed
-- root with a path of log2(n) hashes (audit.prove_entry). A header's
-- canonical text is version 1's; a line's leaves out the header's je_id,
-- je_date and batch_id (audit.canonical_line_text_v2), sealed once in the
-- header; docs/audit.md gives the bytes. Every batch records the version it was sealed with and is
-- verified by it: the batches already here keep version 1, new ones take 2.

CREATE TABLE audit.seal_version (
    seal_version smallint PRIMARY KEY,
    range_seal   text NOT NULL,
    batch_seal   text NOT NULL,
    proofs       boolean NOT NULL
);

COMMENT ON TABLE audit.seal_version IS
    'The ways a batch is sealed; batch.run.seal_version names the one each batch used.';

INSERT INTO audit.seal_version (seal_version, range_seal, batch_seal, proofs) VALUES
    (1, 'sha256 over the canonical texts of the range''s headers and lines in je_id, line_no '
        'order, joined by a newline',
        'sha256 over the range digests in range order, as hex, joined by a newline', false),
    (2, 'RFC 6962 Merkle Tree Hash over the range''s entries in je_id order; a leaf is the '
        'entry''s header canonical text and its lines'' canonical texts (without the '
        'header''s je_id, je_date and batch_id) in line_no order, joined by a newline',
        'RFC 6962 Merkle Tree Hash over the range roots in range order, each root''s 32 bytes '
        'a leaf', true);

GRANT SELECT ON audit.seal_version TO monthend_runner, monthend_auditor;

-- Existing batches keep version 1 (the column's value when added); batches
-- started from now on take 2. An unfinished batch sealed its finished ranges
-- by version 1 and finishes by it: the range seal follows the batch's version.
ALTER TABLE batch.run
    ADD COLUMN seal_version smallint NOT NULL DEFAULT 1
        REFERENCES audit.seal_version (seal_version);
ALTER TABLE batch.run ALTER COLUMN seal_version SET DEFAULT 2;

COMMENT ON COLUMN batch.run.seal_version IS
    'How the batch''s ranges and the batch itself are sealed (audit.seal_version).';
