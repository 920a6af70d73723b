-- Phase 0: opens a batch for a period, in mode FINAL (a run that commits) or
-- DRAFT (a run that stops, validated, before the commit; see V017). Refuses a
-- period that is not OPEN, and a period that already has an unfinished batch
-- (named in the message, so the operator can resume or cancel it); a draft of
-- the period is named with the two ways out of it, finalize or discard. A new
-- draft replaces the period's draft, in the same transaction: a built one is
-- superseded (batch.supersede_draft), one still being built is discarded.
-- Returns the new batch_id.
CREATE OR REPLACE PROCEDURE batch.start_run(
    p_period       text,
    p_workers      integer,
    p_range_size   integer,
    p_max_attempts integer,
    INOUT p_batch_id bigint DEFAULT NULL,
    p_mode         text DEFAULT 'FINAL')
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status       text;
    v_active_batch bigint;
    v_active_state text;
    v_active_mode  text;
    v_replaced     bigint;
BEGIN
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap WHERE ap.period = p_period;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'accounting period % does not exist', p_period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = gl.period_posting_hint(p_period, NULL);
    ELSIF v_status <> 'OPEN' THEN
        RAISE EXCEPTION 'accounting period % is %, nothing can be posted to it', p_period, v_status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = gl.period_posting_hint(p_period, v_status);
    END IF;
    IF batch.auto_reversal_due(p_period) IS NOT NULL THEN
        RAISE EXCEPTION 'the FX revaluation of period-end batch % is not reversed yet',
                        batch.auto_reversal_due(p_period)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('"monthend run --period %s" reverses it first (CALL '
                                'batch.start_auto_reversal(%L, ...) does it in SQL).',
                                p_period, p_period);
    END IF;
    IF p_mode IS DISTINCT FROM 'FINAL' AND p_mode IS DISTINCT FROM 'DRAFT' THEN
        RAISE EXCEPTION 'mode % is not FINAL or DRAFT', coalesce(quote_literal(p_mode), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- A new draft replaces the period's draft. A built one is superseded (kept
    -- readable for monthend diff --against-draft, the one superseded before it
    -- discarded); one not built yet is discarded.
    IF p_mode = 'DRAFT' THEN
        SELECT r.batch_id, r.status INTO v_replaced, v_active_state
          FROM batch.run AS r
         WHERE r.period = p_period AND r.mode = 'DRAFT' AND r.kind = 'RUN'
           AND r.status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED')
           FOR UPDATE;
        IF v_active_state = 'DRAFT' THEN
            FOR v_active_batch IN
                SELECT r.batch_id FROM batch.run AS r
                 WHERE r.period = p_period AND r.status = 'SUPERSEDED' AND r.kind = 'RUN'
                 ORDER BY r.batch_id
            LOOP
                CALL batch.discard_draft(v_active_batch);
            END LOOP;
            CALL batch.supersede_draft(v_replaced);
        ELSIF v_replaced IS NOT NULL THEN
            CALL batch.discard_draft(v_replaced);
        END IF;
    END IF;

    BEGIN
        INSERT INTO batch.run (period, workers, range_size, max_attempts, mode)
        VALUES (p_period, p_workers, p_range_size, p_max_attempts, p_mode)
        RETURNING batch_id INTO p_batch_id;
    EXCEPTION WHEN unique_violation THEN
        SELECT r.batch_id, r.status, r.mode INTO v_active_batch, v_active_state, v_active_mode
          FROM batch.run AS r
         WHERE r.period = p_period AND r.status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED');
        IF v_active_mode = 'DRAFT' THEN
            RAISE EXCEPTION 'period % has draft % (status %); a final run waits for it to be finalized or discarded',
                            p_period, v_active_batch, v_active_state
                USING ERRCODE = 'lock_not_available',
                      HINT = format('Post it with "monthend finalize %s", or remove it with "monthend discard %s" and run again.',
                                    v_active_batch, v_active_batch);
        END IF;
        PERFORM batch.refuse_unfinished_batch(p_period);
    END;

    PERFORM batch.log_event(p_batch_id, 'BATCH_STARTED',
                            format('%s %s started for period %s with %s workers',
                                   CASE p_mode WHEN 'DRAFT' THEN 'draft' ELSE 'batch' END,
                                   p_batch_id, p_period, p_workers)
                            || coalesce(format(' (replacing draft %s)', v_replaced), ''),
                            jsonb_build_object('workers', p_workers, 'range_size', p_range_size,
                                               'mode', p_mode, 'replaces_draft', v_replaced));
    PERFORM audit.append('BATCH_STARTED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', p_period, 'workers', p_workers, 'mode', p_mode));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.start_run(text, integer, integer, integer, bigint, text)
    TO monthend_runner;
