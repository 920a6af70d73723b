-- Phase 0 of a reversal: opens a batch of kind REVERSAL that will mirror the
-- entries of a committed run, for every source row it posted or for the rows
-- given (p_source_types / p_source_ids, the same length). Everything is checked
-- before anything is written, and a refusal says what to do:
--   the batch exists, is COMMITTED and is a run (a reversal is not reversed);
--   the reason is a gl.reversal_reason code; the method is side or sign;
--   the reversal's period (default: the batch's own) is OPEN and not before it;
--   every given row is posted by that batch and not already reversed;
--   no other reversal of that batch and no other batch of the period is active.
-- The reversing entries are dated the original's date when the reversal is in
-- the original's period, else the first day of the reversal's period.
CREATE OR REPLACE PROCEDURE batch.start_reversal(
    p_reverses_batch_id bigint,
    p_reason            text,
    p_note              text,
    p_method            text,
    p_period            text,
    p_source_types      text[],
    p_source_ids        bigint[],
    p_workers           integer,
    p_range_size        integer,
    p_max_attempts      integer,
    INOUT p_batch_id    bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_original     batch.run%ROWTYPE;
    v_period       text;
    v_status       text;
    v_reasons      text;
    v_missing      text;
    v_missing_n    bigint;
    v_reversed     text;
    v_reversed_n   bigint;
    v_left         bigint;
    v_active_batch bigint;
    v_active_state text;
BEGIN
    SELECT * INTO v_original FROM batch.run AS r WHERE r.batch_id = p_reverses_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_reverses_batch_id
            USING ERRCODE = 'no_data_found', HINT = '"monthend status" lists the batches.';
    ELSIF v_original.kind IN ('REVERSAL', 'AUTO_REVERSAL') THEN
        RAISE EXCEPTION 'batch % is a reversal (of batch %); a reversal is not reversed',
                        p_reverses_batch_id, v_original.reverses_batch_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Its source rows are unposted again: post them with "monthend run --period %s".',
                                v_original.period);
    ELSIF v_original.status <> 'COMMITTED' THEN
        RAISE EXCEPTION 'batch % is %; only a committed batch is reversed',
                        p_reverses_batch_id, v_original.status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('An unfinished batch is abandoned with "monthend cancel %s".',
                                p_reverses_batch_id);
    ELSIF EXISTS (SELECT FROM gl.accounting_period AS ap
                  WHERE (ap.period = v_original.period OR ap.period = ANY (v_original.late_periods))
                    AND ap.status IN ('ARCHIVED', 'RESTORED'))
    THEN
        RAISE EXCEPTION 'batch % posted rows of an archived period (%): an archived period is '
                        'kept as it was, not corrected', p_reverses_batch_id,
                        array_to_string(ARRAY(SELECT ap.period FROM gl.accounting_period AS ap
                                              WHERE (ap.period = v_original.period
                                                     OR ap.period = ANY (v_original.late_periods))
                                                AND ap.status IN ('ARCHIVED', 'RESTORED')),
                                        ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Correct what it left wrong by a journal posted in an open period.';
    END IF;
    IF NOT EXISTS (SELECT FROM gl.reversal_reason AS rr WHERE rr.code = p_reason) THEN
        SELECT string_agg(rr.code, ', ' ORDER BY rr.code) INTO v_reasons FROM gl.reversal_reason AS rr;
        RAISE EXCEPTION 'reversal reason % is not known', coalesce(quote_literal(p_reason), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Give one of %s (gl.reversal_reason).', v_reasons);
    ELSIF p_method IS NULL OR p_method NOT IN ('side', 'sign') THEN
        RAISE EXCEPTION 'reversal method % is not known', coalesce(quote_literal(p_method), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'side swaps debit and credit; sign negates the amounts.';
    ELSIF cardinality(p_source_types) IS DISTINCT FROM cardinality(p_source_ids) THEN
        RAISE EXCEPTION 'the source types and source ids given are not the same length'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF cardinality(p_source_ids) = 0 THEN
        RAISE EXCEPTION 'no source rows were given'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give NULL to reverse the whole batch, or the rows to reverse.';
    END IF;

    v_period := coalesce(p_period, v_original.period);
    -- A period-end is corrected whole, in its own period, and only while it is
    -- the latest: the next period-end's opening UPR is its closing one.
    IF v_original.kind = 'PERIOD_END' THEN
        IF p_source_ids IS NOT NULL OR v_period <> v_original.period THEN
            RAISE EXCEPTION 'period-end batch % is reversed whole, in its own period %',
                            p_reverses_batch_id, v_original.period
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('"monthend reverse %s --reason CODE", without --source-ids '
                                    'or --period; then "monthend period-end --period %s".',
                                    p_reverses_batch_id, v_original.period);
        ELSIF EXISTS (SELECT FROM batch.run AS l
                      WHERE l.kind = 'PERIOD_END' AND l.period > v_original.period
                        AND gl.period_end_batch(l.period) = l.batch_id) THEN
            RAISE EXCEPTION 'period-end batch % of % is followed by a later period''s period-end',
                            p_reverses_batch_id, v_original.period
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Period-ends are corrected latest first: reverse the later ones first.';
        END IF;
    END IF;
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap WHERE ap.period = v_period;
    IF v_period < v_original.period THEN
        RAISE EXCEPTION 'period % is before period % of batch %; a reversal is dated on or after what it reverses',
                        v_period, v_original.period, p_reverses_batch_id
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF v_status IS DISTINCT FROM 'OPEN' AND p_period IS NULL THEN
        RAISE EXCEPTION 'period % of batch % is %, so the reversal cannot be posted there',
                        v_period, p_reverses_batch_id, coalesce(v_status, 'not defined')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Reopen it ("monthend period reopen %s --reason ...") or reverse into an open period with --period.',
                                v_period);
    ELSIF v_status IS DISTINCT FROM 'OPEN' THEN
        RAISE EXCEPTION 'period % is %; a reversal is posted into an OPEN period',
                        v_period, coalesce(v_status, 'not defined')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name an open period with --period ("monthend period list" shows them).';
    END IF;

    IF p_source_ids IS NOT NULL THEN
        -- Each given row: posted by the batch, and that posting not reversed yet.
        WITH given AS (
            SELECT DISTINCT g.source_type, g.source_id
            FROM unnest(p_source_types, p_source_ids) AS g (source_type, source_id)
        ), found AS (
            SELECT g.source_type, g.source_id, c.generation,
                   CASE WHEN rb.batch_id IS NOT NULL THEN sr.batch_id END AS reversed_by
            FROM given AS g
            LEFT JOIN batch.source_claim AS c
              ON c.period = ANY (v_original.period || v_original.late_periods)
             AND c.source_type = g.source_type
             AND c.source_id = g.source_id AND c.batch_id = p_reverses_batch_id
            LEFT JOIN batch.source_reversal AS sr
              ON sr.period = c.period AND sr.source_type = c.source_type
             AND sr.source_id = c.source_id AND sr.generation = c.generation
            LEFT JOIN batch.run AS rb
              ON rb.batch_id = sr.batch_id AND rb.status <> 'CANCELLED'
        )
        SELECT (SELECT string_agg(format('%s %s', f.source_type, f.source_id), ', '
                                  ORDER BY f.source_type, f.source_id)
                  FROM (SELECT * FROM found AS x WHERE x.generation IS NULL
                        ORDER BY x.source_type, x.source_id LIMIT 10) AS f),
               (SELECT count(*) FROM found AS x WHERE x.generation IS NULL),
               (SELECT string_agg(format('%s %s (batch %s)', f.source_type, f.source_id,
                                         f.reversed_by), ', '
                                  ORDER BY f.source_type, f.source_id)
                  FROM (SELECT * FROM found AS x WHERE x.reversed_by IS NOT NULL
                        ORDER BY x.source_type, x.source_id LIMIT 10) AS f),
               (SELECT count(*) FROM found AS x WHERE x.reversed_by IS NOT NULL)
          INTO v_missing, v_missing_n, v_reversed, v_reversed_n;
        IF v_missing_n > 0 THEN
            RAISE EXCEPTION '% of the given source rows are not posted by batch %: %',
                            v_missing_n, p_reverses_batch_id,
                            v_missing || CASE WHEN v_missing_n > 10 THEN ', ...' ELSE '' END
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Nothing was reversed. Give rows that batch posted (a CSV of source_type,source_id).';
        ELSIF v_reversed_n > 0 THEN
            RAISE EXCEPTION '% of the given source rows are already reversed: %',
                            v_reversed_n,
                            v_reversed || CASE WHEN v_reversed_n > 10 THEN ', ...' ELSE '' END
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Nothing was reversed. A posting is reversed at most once.';
        END IF;
    ELSE
        SELECT count(*) INTO v_left
          FROM batch.source_claim AS c
         WHERE c.period = ANY (v_original.period || v_original.late_periods)
           AND c.batch_id = p_reverses_batch_id
           AND NOT EXISTS (SELECT FROM batch.source_reversal AS sr
                           JOIN batch.run AS rb ON rb.batch_id = sr.batch_id
                           WHERE sr.period = c.period AND sr.source_type = c.source_type
                             AND sr.source_id = c.source_id AND sr.generation = c.generation
                             AND rb.status <> 'CANCELLED');
        IF v_left = 0 THEN
            RAISE EXCEPTION 'batch % has no posting left to reverse', p_reverses_batch_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = '"monthend report reversals" lists the reversals made.';
        END IF;
    END IF;

    BEGIN
        INSERT INTO batch.run (period, workers, range_size, max_attempts, kind,
                               reverses_batch_id, reversal_method, reversal_reason,
                               reversal_note)
        VALUES (v_period, p_workers, p_range_size, p_max_attempts, 'REVERSAL',
                p_reverses_batch_id, p_method, p_reason, p_note)
        RETURNING batch_id INTO p_batch_id;
    EXCEPTION WHEN unique_violation THEN
        SELECT r.batch_id, r.status INTO v_active_batch, v_active_state
          FROM batch.run AS r
         WHERE r.reverses_batch_id = p_reverses_batch_id
           AND r.status NOT IN ('COMMITTED', 'CANCELLED');
        IF FOUND THEN
            RAISE EXCEPTION 'batch % is being reversed by batch % (status %)',
                            p_reverses_batch_id, v_active_batch, v_active_state
                USING ERRCODE = 'lock_not_available',
                      HINT = format('Wait for it, finish it with "monthend resume %s" or abandon it with "monthend cancel %s".',
                                    v_active_batch, v_active_batch);
        END IF;
        PERFORM batch.refuse_unfinished_batch(v_period);
    END;

    INSERT INTO batch.reversal_selection (batch_id, source_type, source_id)
    SELECT DISTINCT p_batch_id, g.source_type, g.source_id
    FROM unnest(p_source_types, p_source_ids) AS g (source_type, source_id)
    WHERE p_source_ids IS NOT NULL;

    PERFORM batch.log_event(p_batch_id, 'BATCH_STARTED',
                            format('reversal batch %s started for period %s: reverses batch %s (%s, by %s)',
                                   p_batch_id, v_period, p_reverses_batch_id, p_reason, p_method),
                            jsonb_build_object('workers', p_workers, 'range_size', p_range_size,
                                               'kind', 'REVERSAL',
                                               'reverses_batch_id', p_reverses_batch_id));
    PERFORM audit.append('BATCH_STARTED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', v_period, 'workers', p_workers, 'kind', 'REVERSAL',
        'reverses_batch_id', p_reverses_batch_id, 'reason', p_reason, 'note', p_note,
        'method', p_method, 'selected_rows', cardinality(p_source_ids)));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.start_reversal(bigint, text, text, text, text, text[], bigint[],
                                                integer, integer, integer, bigint)
    TO monthend_runner;
