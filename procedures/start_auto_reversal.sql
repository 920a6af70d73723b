-- Opens the automatic reversal of the previous period's FX revaluation, the
-- first batch of a period (batch.auto_reversal_due): a batch of kind
-- AUTO_REVERSAL that mirrors the revaluation entries of that period-end
-- batch (by side), dated the first day of p_period, through the phases of a
-- reversal (batch.preflight_reversal onwards). Leaves p_batch_id NULL when
-- nothing is due. Refused when another batch of the period is unfinished.
CREATE OR REPLACE PROCEDURE batch.start_auto_reversal(
    p_period       text,
    p_workers      integer,
    p_range_size   integer,
    p_max_attempts integer,
    INOUT p_batch_id bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status       text;
    v_due          bigint;
BEGIN
    p_batch_id := NULL;
    v_due := batch.auto_reversal_due(p_period);
    IF v_due IS NULL THEN
        RETURN;
    END IF;
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap WHERE ap.period = p_period;
    IF v_status IS DISTINCT FROM 'OPEN' THEN
        RAISE EXCEPTION 'period % is %; the reversal of period-end batch %''s FX revaluation is '
                        'posted on its first day', p_period, coalesce(v_status, 'not defined'),
                        v_due
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Open it ("monthend period open %s").', p_period);
    END IF;

    BEGIN
        INSERT INTO batch.run (period, workers, range_size, max_attempts, kind,
                               reverses_batch_id, reversal_method, reversal_reason)
        VALUES (p_period, p_workers, p_range_size, p_max_attempts, 'AUTO_REVERSAL',
                v_due, 'side', 'PERIOD_END_REVALUATION')
        RETURNING batch_id INTO p_batch_id;
    EXCEPTION WHEN unique_violation THEN
        PERFORM batch.refuse_unfinished_batch(p_period, v_due);
    END;
    -- Its selection: the revaluation entries not reversed yet (not the UPR's,
    -- which stay).
    INSERT INTO batch.reversal_selection (batch_id, source_type, source_id)
    SELECT p_batch_id, c.source_type, c.source_id
    FROM batch.source_claim AS c
    JOIN batch.run AS o ON o.batch_id = v_due
    WHERE c.period = o.period AND c.source_type = 'FX_REVALUATION' AND c.batch_id = v_due
      AND NOT EXISTS (SELECT FROM batch.source_reversal AS sr
                      JOIN batch.run AS rb ON rb.batch_id = sr.batch_id
                      WHERE sr.period = c.period AND sr.source_type = c.source_type
                        AND sr.source_id = c.source_id AND sr.generation = c.generation
                        AND rb.status <> 'CANCELLED');

    PERFORM batch.log_event(p_batch_id, 'BATCH_STARTED',
                            format('automatic reversal %s started for period %s: the FX '
                                   'revaluation of period-end batch %s', p_batch_id, p_period,
                                   v_due),
                            jsonb_build_object('workers', p_workers, 'range_size', p_range_size,
                                               'kind', 'AUTO_REVERSAL',
                                               'reverses_batch_id', v_due));
    PERFORM audit.append('BATCH_STARTED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', p_period, 'workers', p_workers,
        'kind', 'AUTO_REVERSAL', 'reverses_batch_id', v_due,
        'reason', 'PERIOD_END_REVALUATION', 'method', 'side'));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.start_auto_reversal(text, integer, integer, integer, bigint)
    TO monthend_runner;
