-- Pre-commit validation's heavy half, one staging table of a batch at a time,
-- so that the batch's workers prepare both at once: counts the table's rows
-- against what the ranges recorded (check staging_header_rows: the batch's
-- entries; staging_line_rows: the ranges' lines) and builds the index ATTACH
-- will adopt at commit, once, over the finished table (headers: the primary
-- key; lines: the BRIN on je_id). Takes an ALLOCATED batch whose ranges are
-- all DONE; p_table is 'header' or 'line'. Runs again harmlessly (an index
-- already built is kept; the count is recorded again).
-- batch.validate_batch then judges the counts with its other checks.
CREATE OR REPLACE PROCEDURE batch.prepare_stage_table(p_batch_id bigint, p_table text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started  timestamptz := clock_timestamp();
    v_run      batch.run%ROWTYPE;
    v_not_done bigint;
    v_expected bigint;
    v_rows     bigint;
    v_table    text := 'stage_journal_entry_' || p_table || '_' || p_batch_id;
BEGIN
    IF p_table NOT IN ('header', 'line') THEN
        RAISE EXCEPTION 'a batch''s staging tables are header and line, not %', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The batch's row first (KEY SHARE, as the checks' rows below would take
    -- it), then its table: the order commit and validation lock them in. A
    -- preparation that locked the table first and the row after deadlocked
    -- with a second driver's commit (row, then table).
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.status <> 'ALLOCATED' THEN
        RAISE EXCEPTION 'batch % is %; its staging tables are prepared while it is ALLOCATED',
                        p_batch_id, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) FILTER (WHERE rg.status <> 'DONE'),
           CASE p_table WHEN 'header' THEN coalesce(sum(rg.je_count), 0)
                        ELSE coalesce(sum(rg.line_count), 0) END
      INTO v_not_done, v_expected
      FROM batch.range AS rg WHERE rg.batch_id = p_batch_id;
    IF v_not_done > 0 THEN
        RAISE EXCEPTION 'batch % has % ranges not DONE', p_batch_id, v_not_done
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Process them with "monthend resume %s".', p_batch_id);
    END IF;

    IF to_regclass(format('batch.%I', v_table)) IS NULL THEN
        v_rows := 0;
    ELSE
        -- One preparation of a table at a time (two drivers on one batch):
        -- this mode conflicts with itself and with writers, not with readers.
        EXECUTE format('LOCK TABLE batch.%I IN SHARE ROW EXCLUSIVE MODE', v_table);
        EXECUTE format('SELECT count(*) FROM batch.%I', v_table) INTO v_rows;
        IF p_table = 'header' THEN
            -- A constraint, not a bare unique index: ATTACH adopts an index
            -- for the parent's primary key only if it backs a constraint.
            IF to_regclass(format('batch.%I', v_table || '_pkey')) IS NULL THEN
                EXECUTE format('ALTER TABLE batch.%I ADD CONSTRAINT %I '
                               'PRIMARY KEY (je_id, je_date, batch_id)',
                               v_table, v_table || '_pkey');
            END IF;
        ELSE
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON batch.%I USING brin (je_id) '
                           'WITH (pages_per_range = 16)', v_table || '_je_id_brin', v_table);
        END IF;
    END IF;
    PERFORM batch.record_check(p_batch_id, NULL, 'pre-commit', 'staging_' || p_table || '_rows',
                               v_rows = v_expected, format('%s %ss', v_expected, p_table),
                               format('%s %ss', v_rows, p_table));
    PERFORM batch.log_event(p_batch_id, 'STAGE_PREPARED',
        format('staging %s table: %s rows counted, index built', p_table, v_rows),
        jsonb_build_object('table', p_table, 'rows', v_rows, 'started_at', v_started,
                           'seconds', round(extract(epoch FROM clock_timestamp() - v_started)
                                            ::numeric, 3)));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.prepare_stage_table(bigint, text) TO monthend_runner;
