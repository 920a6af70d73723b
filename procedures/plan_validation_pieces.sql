-- Pre-commit validation's heavy half, planned: the pieces in which the
-- batch's workers prepare its staging tables side by side
-- (batch.run_validation_piece), written to batch.validation_piece in the order to
-- hand them out, longest first: each staging table's index (the header's
-- primary key, then the line's BRIN), then its row count in pieces of at most
-- stage_count_blocks blocks (the line table's first, the larger), then, for
-- a run, the count of its claims in each claims partition it wrote to. With
-- every count piece shorter than the index builds, the connections finish
-- within one count piece of each other.
-- Takes an ALLOCATED batch whose ranges are all DONE, so its staging tables
-- no longer grow (and its claims were all written by pre-flight: a claims
-- partition that grows after the plan grows by other batches' claims). A plan
-- already written stands while its staging tables have the blocks it counted
-- (a second driver, a resumed batch); one for tables of another size, or
-- without pieces for a table to prepare, is replaced, its pieces to be done
-- again.
CREATE OR REPLACE PROCEDURE batch.plan_validation_pieces(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- 128 MiB of 8 kB pages: counted in 0.1 to 0.4 s on the reference
    -- machine, against seconds for an index build of a million source rows.
    stage_count_blocks constant bigint := 16384;
    v_run      batch.run%ROWTYPE;
    v_not_done bigint;
    v_tables   jsonb;
    v_stale    boolean;
BEGIN
    -- NO KEY UPDATE: one planner at a time, beside the pieces (KEY SHARE).
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status <> 'ALLOCATED' THEN
        RAISE EXCEPTION 'batch % is %; its staging tables are prepared while it is ALLOCATED',
                        p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO v_not_done
      FROM batch.range AS rg WHERE rg.batch_id = p_batch_id AND rg.status <> 'DONE';
    IF v_not_done > 0 THEN
        RAISE EXCEPTION 'batch % has % ranges not DONE', p_batch_id, v_not_done
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Process them with "monthend resume %s".', p_batch_id);
    END IF;

    -- The tables to prepare and their size now: the staging tables, and a
    -- run's claims partitions that hold blocks (its period's, and those of the
    -- late rows it took).
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'stage_table', t.stage_table, 'claim_period', t.claim_period,
               'blocks', pg_relation_size(t.relation) / current_setting('block_size')::bigint)
               ORDER BY t.stage_table, t.claim_period), '[]')
      INTO v_tables
      FROM (SELECT x.stage_table, x.claim_period, to_regclass(format('batch.%I', x.relname)) AS relation
            FROM (SELECT s.stage_table, NULL::text AS claim_period,
                         'stage_journal_entry_' || s.stage_table || '_' || p_batch_id AS relname
                  FROM unnest(ARRAY['header', 'line']) AS s (stage_table)
                  UNION ALL
                  SELECT 'claim', c.period, batch.claim_partition_name(c.period)
                  FROM unnest(v_run.period || v_run.late_periods) AS c (period)
                  WHERE v_run.kind = 'RUN') AS x) AS t
     WHERE t.relation IS NOT NULL
       AND (t.stage_table <> 'claim' OR pg_relation_size(t.relation) > 0);

    SELECT NOT EXISTS (SELECT FROM batch.validation_piece AS sp WHERE sp.batch_id = p_batch_id)
           OR EXISTS (SELECT FROM batch.validation_piece AS sp
                      JOIN jsonb_to_recordset(v_tables) AS t (stage_table text, blocks bigint)
                        ON t.stage_table = sp.stage_table
                      WHERE sp.batch_id = p_batch_id AND sp.task = 'index'
                        AND sp.end_block <> t.blocks)
           OR EXISTS (SELECT FROM jsonb_to_recordset(v_tables)
                                  AS t (stage_table text, claim_period text)
                      WHERE NOT EXISTS (SELECT FROM batch.validation_piece AS sp
                                        WHERE sp.batch_id = p_batch_id
                                          AND sp.stage_table = t.stage_table
                                          AND sp.claim_period IS NOT DISTINCT FROM t.claim_period))
      INTO v_stale;
    IF NOT v_stale THEN
        RETURN;
    END IF;

    DELETE FROM batch.validation_piece AS sp WHERE sp.batch_id = p_batch_id;
    INSERT INTO batch.validation_piece (batch_id, piece_no, stage_table, claim_period, task,
                                        first_block, end_block)
    SELECT p_batch_id,
           row_number() OVER (ORDER BY p.task = 'count',
                                       CASE WHEN p.task = 'index'
                                            THEN array_position(ARRAY['header', 'line'], p.stage_table)
                                            ELSE array_position(ARRAY['line', 'header', 'claim'],
                                                                p.stage_table) END,
                                       p.claim_period, p.first_block),
           p.stage_table, p.claim_period, p.task, p.first_block, p.end_block
    FROM (SELECT t.stage_table, t.claim_period, 'index' AS task, 0::bigint AS first_block,
                 t.blocks AS end_block
          FROM jsonb_to_recordset(v_tables) AS t (stage_table text, claim_period text, blocks bigint)
          WHERE t.stage_table <> 'claim'
          UNION ALL
          SELECT t.stage_table, t.claim_period, 'count', g.first_block,
                 least(g.first_block + stage_count_blocks, t.blocks)
          FROM jsonb_to_recordset(v_tables) AS t (stage_table text, claim_period text, blocks bigint)
          CROSS JOIN LATERAL generate_series(0, t.blocks - 1, stage_count_blocks)
              AS g (first_block)) AS p;
    PERFORM batch.log_event(p_batch_id, 'STAGE_PLANNED',
        format('staging tables to prepare in %s pieces (%s)',
               (SELECT count(*) FROM batch.validation_piece AS sp WHERE sp.batch_id = p_batch_id),
               (SELECT string_agg(format('%s: %s blocks',
                                         concat_ws(' ', t.stage_table, t.claim_period), t.blocks),
                                  ', ')
                  FROM jsonb_to_recordset(v_tables)
                       AS t (stage_table text, claim_period text, blocks bigint))),
        jsonb_build_object('tables', v_tables));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.plan_validation_pieces(bigint) TO monthend_runner;
