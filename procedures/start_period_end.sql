-- Phase 0 of a period-end: opens a batch of kind PERIOD_END for an OPEN
-- period. It computes the UPR of every policy in force at the period's end
-- and revalues the monetary accounts' foreign-currency balances, and books
-- both, through the phases of a run (batch.preflight_period_end onwards).
-- Refused, saying what to do, when the period is not OPEN, when its
-- period-end is already committed (a correction is a reversal of it and a
-- new period-end), when a later period's is (period-ends are booked in
-- period order), when the automatic reversal of the previous period's
-- revaluation has not been made (batch.start_auto_reversal, which monthend
-- runs first), or when another batch of the period is unfinished.
-- A draft (p_mode DRAFT) stops validated, outside the ledger, like a run's.
CREATE OR REPLACE PROCEDURE batch.start_period_end(
    p_period       text,
    p_workers      integer,
    p_range_size   integer,
    p_max_attempts integer,
    p_mode         text,
    INOUT p_batch_id bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status       text;
    v_committed    bigint;
    v_due          bigint;
BEGIN
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap WHERE ap.period = p_period;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'accounting period % does not exist', p_period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = gl.period_posting_hint(p_period, NULL);
    ELSIF v_status <> 'OPEN' THEN
        RAISE EXCEPTION 'accounting period % is %; its period-end entries are posted while it is OPEN',
                        p_period, v_status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = gl.period_posting_hint(p_period, v_status);
    ELSIF p_mode IS DISTINCT FROM 'FINAL' AND p_mode IS DISTINCT FROM 'DRAFT' THEN
        RAISE EXCEPTION 'mode % is not FINAL or DRAFT', coalesce(quote_literal(p_mode), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_committed := gl.period_end_batch(p_period);
    IF v_committed IS NOT NULL THEN
        RAISE EXCEPTION 'period % has its period-end batch % committed', p_period, v_committed
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('To correct it, reverse it ("monthend reverse %s --reason ...") '
                                'and run the period-end again.', v_committed);
    END IF;
    IF EXISTS (SELECT FROM batch.run AS l
               WHERE l.kind = 'PERIOD_END' AND l.period > p_period
                 AND gl.period_end_batch(l.period) = l.batch_id) THEN
        RAISE EXCEPTION 'a later period has its period-end committed; period % would be booked '
                        'after it', p_period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Period-ends are booked in period order: reverse the later ones first '
                         '("monthend reverse B --reason ..."), then book them again in order.';
    END IF;
    v_due := batch.auto_reversal_due(p_period);
    IF v_due IS NOT NULL THEN
        RAISE EXCEPTION 'the FX revaluation of period-end batch % is not reversed yet', v_due
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('"monthend period-end --period %s" and "monthend run" reverse it '
                                'first (CALL batch.start_auto_reversal(%L, ...) does it in SQL).',
                                p_period, p_period);
    END IF;

    BEGIN
        INSERT INTO batch.run (period, workers, range_size, max_attempts, kind, mode)
        VALUES (p_period, p_workers, p_range_size, p_max_attempts, 'PERIOD_END', p_mode)
        RETURNING batch_id INTO p_batch_id;
    EXCEPTION WHEN unique_violation THEN
        PERFORM batch.refuse_unfinished_batch(p_period);
    END;

    PERFORM batch.log_event(p_batch_id, 'BATCH_STARTED',
                            format('period-end %s%s started for period %s with %s workers',
                                   CASE p_mode WHEN 'DRAFT' THEN 'draft ' ELSE 'batch ' END,
                                   p_batch_id, p_period, p_workers),
                            jsonb_build_object('workers', p_workers, 'range_size', p_range_size,
                                               'kind', 'PERIOD_END', 'mode', p_mode));
    PERFORM audit.append('BATCH_STARTED', jsonb_build_object(
        'batch_id', p_batch_id, 'period', p_period, 'workers', p_workers, 'kind', 'PERIOD_END',
        'mode', p_mode));
END
$$;

GRANT EXECUTE ON PROCEDURE batch.start_period_end(text, integer, integer, integer, text, bigint)
    TO monthend_runner;
