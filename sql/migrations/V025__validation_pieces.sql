-- Pre-commit validation's heavy half in pieces. Once every range is done, the
-- batch's staging tables are prepared piece by piece, by as many connections
-- as the batch may use, like its ranges: each table's index (built once, over
-- the finished table, for ATTACH to adopt at commit, with the table's planner
-- statistics gathered after it) and its row count, cut into block ranges so
-- that no count outlasts the longest index build. batch.plan_validation_pieces
-- writes the pieces, batch.run_validation_piece does one, and
-- batch.validate_batch judges the counts: the count pieces must cover every
-- block of their table, and their rows add up to what the ranges recorded.
CREATE TABLE batch.validation_piece (
    batch_id     bigint  NOT NULL,
    piece_no     integer NOT NULL,
    stage_table  text    NOT NULL,
    task         text    NOT NULL,
    first_block  bigint  NOT NULL,
    end_block    bigint  NOT NULL,
    row_count    bigint,
    worker_pid   integer,
    started_at   timestamptz,
    finished_at  timestamptz,
    CONSTRAINT validation_piece_pkey PRIMARY KEY (batch_id, piece_no),
    CONSTRAINT validation_piece_batch_fkey FOREIGN KEY (batch_id) REFERENCES batch.run (batch_id),
    CONSTRAINT validation_piece_table_check CHECK (stage_table IN ('header', 'line')),
    CONSTRAINT validation_piece_task_check CHECK (task IN ('index', 'count')),
    CONSTRAINT validation_piece_blocks_check CHECK (0 <= first_block AND first_block <= end_block),
    CONSTRAINT validation_piece_done_check CHECK (
        finished_at IS NULL OR (started_at IS NOT NULL
                                AND (task = 'index' OR row_count IS NOT NULL)))
);
COMMENT ON TABLE batch.validation_piece IS
    'Pieces of a batch''s pre-commit preparation of its staging tables (batch.run_validation_piece).';
COMMENT ON COLUMN batch.validation_piece.task IS
    'index: the table''s index for ATTACH (header: the primary key; line: the BRIN on je_id), '
    'then ANALYZE; count: the rows in blocks first_block .. end_block - 1.';
COMMENT ON COLUMN batch.validation_piece.end_block IS
    'The first block after the piece; an index piece spans the whole table as planned.';
COMMENT ON COLUMN batch.validation_piece.row_count IS 'A count piece, done: the rows it counted.';
COMMENT ON COLUMN batch.validation_piece.finished_at IS 'NULL: still to do.';
GRANT SELECT ON batch.validation_piece TO monthend_runner, monthend_auditor;

-- Replaced by the pieces.
DROP PROCEDURE IF EXISTS batch.prepare_stage_table(bigint, text);
