-- The period-end batch the period-end reports (gl.upr_report,
-- gl.fx_revaluation_report) read: gl.period_end_batch(p_period), the period's
-- current committed PERIOD_END batch. Raises, saying what to do, when there is
-- nothing to report on: the period is not defined; it is archived (the ledger
-- lines and claims the reports read are in its archive); or it has no
-- committed period-end (none run yet, one unfinished or a draft not finalized,
-- or the one committed was reversed and not run again). Read only.
CREATE OR REPLACE FUNCTION gl.period_end_report_batch(p_period text)
RETURNS bigint
LANGUAGE plpgsql
STABLE
-- Its hints are the lifecycle's own (gl.period_posting_hint,
-- batch.unfinished_batch_hint), which the roles do not call directly.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status   text;
    v_batch    bigint;
    v_pending  bigint;
    v_state    text;
    v_reversed bigint;
BEGIN
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap WHERE ap.period = p_period;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'period % is not in gl.accounting_period', p_period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = gl.period_posting_hint(p_period, NULL);
    ELSIF v_status = 'ARCHIVED' THEN
        RAISE EXCEPTION 'period % is archived: the ledger lines and claims its period-end '
                        'reports read are in its archive', p_period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Restore it first ("monthend restore --from DIRECTORY").';
    END IF;

    v_batch := gl.period_end_batch(p_period);
    IF v_batch IS NOT NULL THEN
        RETURN v_batch;
    END IF;

    SELECT r.batch_id, r.status INTO v_pending, v_state
      FROM batch.run AS r
     WHERE r.period = p_period AND r.kind = 'PERIOD_END'
       AND r.status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED')
     ORDER BY r.batch_id DESC
     LIMIT 1;
    SELECT max(r.batch_id) INTO v_reversed
      FROM batch.run AS r
     WHERE r.period = p_period AND r.kind = 'PERIOD_END' AND r.status = 'COMMITTED';
    RAISE EXCEPTION 'period % has no committed period-end: its UPR and FX revaluation are not '
                    'computed', p_period
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = CASE
                  WHEN v_pending IS NOT NULL
                      THEN format('Its period-end batch %s is %s. ', v_pending, v_state)
                           || batch.unfinished_batch_hint(v_pending)
                  WHEN v_reversed IS NOT NULL
                      THEN format('Its period-end batch %s was reversed: run it again with '
                                  '"monthend period-end --period %s".', v_reversed, p_period)
                  ELSE format('Run it first: "monthend period-end --period %s" (once the '
                              'period''s runs are committed).', p_period)
              END;
END
$$;

GRANT EXECUTE ON FUNCTION gl.period_end_report_batch(text) TO monthend_runner, monthend_auditor;
