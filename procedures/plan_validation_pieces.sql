-- Pre-commit validation's heavy half, planned: the pieces in which the
-- batch's workers prepare its staging tables side by side
-- (batch.run_validation_piece), written to batch.validation_piece in the order to
-- hand them out, longest first: each table's index (the header's primary key,
-- then the line's BRIN), then its row count in pieces of at most
-- stage_count_blocks blocks (the line table's first, the larger). With every
-- count piece shorter than the index builds, the connections finish within
-- one count piece of each other.
-- Takes an ALLOCATED batch whose ranges are all DONE, so its staging tables
-- no longer grow. A plan already written stands while its tables have the
-- blocks it counted (a second driver, a resumed batch); one for tables of
-- another size is replaced, its pieces to be done again.
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
    v_blocks   jsonb := '{}'::jsonb;
    v_table    text;
    v_relation regclass;
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

    FOREACH v_table IN ARRAY ARRAY['header', 'line'] LOOP
        v_relation := to_regclass(format('batch.%I',
                                         'stage_journal_entry_' || v_table || '_' || p_batch_id));
        IF v_relation IS NOT NULL THEN
            v_blocks := v_blocks || jsonb_build_object(v_table,
                pg_relation_size(v_relation) / current_setting('block_size')::bigint);
        END IF;
    END LOOP;

    SELECT NOT EXISTS (SELECT FROM batch.validation_piece AS sp WHERE sp.batch_id = p_batch_id)
           OR EXISTS (SELECT FROM batch.validation_piece AS sp
                      WHERE sp.batch_id = p_batch_id AND sp.task = 'index'
                        AND (v_blocks -> sp.stage_table) IS DISTINCT FROM to_jsonb(sp.end_block))
           OR EXISTS (SELECT FROM jsonb_object_keys(v_blocks) AS t (stage_table)
                      WHERE NOT EXISTS (SELECT FROM batch.validation_piece AS sp
                                        WHERE sp.batch_id = p_batch_id
                                          AND sp.stage_table = t.stage_table))
      INTO v_stale;
    IF NOT v_stale THEN
        RETURN;
    END IF;

    DELETE FROM batch.validation_piece AS sp WHERE sp.batch_id = p_batch_id;
    INSERT INTO batch.validation_piece (batch_id, piece_no, stage_table, task, first_block, end_block)
    SELECT p_batch_id,
           row_number() OVER (ORDER BY p.task = 'count',
                                       (p.task = 'count') = (p.stage_table = 'header'),
                                       p.first_block),
           p.stage_table, p.task, p.first_block, p.end_block
    FROM (SELECT t.key AS stage_table, 'index' AS task, 0::bigint AS first_block,
                 t.value::bigint AS end_block
          FROM jsonb_each_text(v_blocks) AS t
          UNION ALL
          SELECT t.key, 'count', g.first_block,
                 least(g.first_block + stage_count_blocks, t.value::bigint)
          FROM jsonb_each_text(v_blocks) AS t
          CROSS JOIN LATERAL generate_series(0, t.value::bigint - 1, stage_count_blocks)
              AS g (first_block)) AS p;
    PERFORM batch.log_event(p_batch_id, 'STAGE_PLANNED',
        format('staging tables to prepare in %s pieces (%s)',
               (SELECT count(*) FROM batch.validation_piece AS sp WHERE sp.batch_id = p_batch_id),
               (SELECT string_agg(format('%s: %s blocks', t.key, t.value), ', '
                                  ORDER BY t.key)
                  FROM jsonb_each_text(v_blocks) AS t)),
        jsonb_build_object('blocks', v_blocks));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.plan_validation_pieces(bigint) TO monthend_runner;
