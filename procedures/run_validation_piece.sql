-- One piece of pre-commit validation's heavy half (batch.plan_validation_pieces
-- planned them), run by the batch's workers side by side:
--   index  the index ATTACH adopts at commit, built once over the finished
--          table (header: the primary key, a unique index then made the
--          constraint, since ATTACH adopts an index for the parent's primary
--          key only if it backs one; line: the BRIN on je_id), and the table's
--          planner statistics (ANALYZE: they stay with the table when it is
--          attached, so the ledger's new partitions are planned for at once).
--   count  the table's rows in the piece's blocks (a TID range scan); of a
--          claims partition, the batch's claims there.
-- batch.validate_batch then judges the counts with its other checks. Takes an
-- ALLOCATED batch; a piece already done is left as it is, and two
-- connections given the same piece do it once (the second waits on the
-- piece's row, then finds it done).
CREATE OR REPLACE PROCEDURE batch.run_validation_piece(p_batch_id bigint, p_piece_no integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- The batch's connections are the parallelism, one piece each, as they are
-- one range each: an index build's own parallel workers would queue on the
-- same cores and slow the pieces beside it (at 1M rows on 2 cores the
-- header's key took 4.7 s with two workers of its own against the other
-- connection's 3.8 s of pieces).
SET max_parallel_maintenance_workers = 0
AS $$
DECLARE
    v_run     batch.run%ROWTYPE;
    v_piece   batch.validation_piece%ROWTYPE;
    v_table   text;
    v_rows    bigint;
    v_started timestamptz;
BEGIN
    -- The batch's row first (KEY SHARE, as the checks' rows below would take
    -- it), then its tables: the order commit and validation lock them in. A
    -- preparation that locked a table first and the row after deadlocked
    -- with a second driver's commit (row, then table).
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status <> 'ALLOCATED' THEN
        RAISE EXCEPTION 'batch % is %; its staging tables are prepared while it is ALLOCATED',
                        p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT * INTO v_piece FROM batch.validation_piece AS sp
     WHERE sp.batch_id = p_batch_id AND sp.piece_no = p_piece_no
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % has no staging piece %', p_batch_id, p_piece_no
            USING ERRCODE = 'no_data_found',
                  HINT = format('Plan them with CALL batch.plan_validation_pieces(%s), or "monthend resume %s".',
                                p_batch_id, p_batch_id);
    ELSIF v_piece.finished_at IS NOT NULL THEN
        RETURN;
    END IF;
    v_started := clock_timestamp();
    v_table := 'stage_journal_entry_' || v_piece.stage_table || '_' || p_batch_id;

    IF v_piece.stage_table = 'claim' THEN
        EXECUTE format('SELECT count(*) FROM batch.%I '
                       'WHERE ctid >= $1 AND ctid < $2 AND batch_id = $3',
                       batch.claim_partition_name(v_piece.claim_period))
           INTO v_rows
          USING format('(%s,0)', v_piece.first_block)::tid, format('(%s,0)', v_piece.end_block)::tid,
                p_batch_id;
    ELSIF v_piece.task = 'count' THEN
        EXECUTE format('SELECT count(*) FROM batch.%I WHERE ctid >= $1 AND ctid < $2', v_table)
           INTO v_rows
          USING format('(%s,0)', v_piece.first_block)::tid, format('(%s,0)', v_piece.end_block)::tid;
    ELSIF v_piece.stage_table = 'header' THEN
        EXECUTE format('CREATE UNIQUE INDEX IF NOT EXISTS %I ON batch.%I (je_id, je_date, batch_id)',
                       v_table || '_pkey', v_table);
        IF NOT EXISTS (SELECT FROM pg_constraint AS c
                       WHERE c.conrelid = format('batch.%I', v_table)::regclass
                         AND c.contype = 'p') THEN
            -- The columns are NOT NULL already: the constraint is a catalog
            -- change, made under a brief ACCESS EXCLUSIVE lock.
            EXECUTE format('ALTER TABLE batch.%I ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I',
                           v_table, v_table || '_pkey', v_table || '_pkey');
        END IF;
        EXECUTE format('ANALYZE batch.%I', v_table);
    ELSE
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON batch.%I USING brin (je_id) '
                       'WITH (pages_per_range = 16)', v_table || '_je_id_brin', v_table);
        EXECUTE format('ANALYZE batch.%I', v_table);
    END IF;

    UPDATE batch.validation_piece AS sp
       SET row_count = v_rows, worker_pid = pg_backend_pid(), started_at = v_started,
           finished_at = clock_timestamp()
     WHERE sp.batch_id = p_batch_id AND sp.piece_no = p_piece_no;
END
$$;

GRANT EXECUTE ON PROCEDURE batch.run_validation_piece(bigint, integer) TO monthend_runner;
