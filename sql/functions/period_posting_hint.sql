-- What to do to post into a period of status p_status (NULL: the period has no
-- row): the hint start_run, pre-flight and the lifecycle give when a period is
-- not OPEN. NULL for an OPEN period.
CREATE OR REPLACE FUNCTION gl.period_posting_hint(p_period text, p_status text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE
    WHEN p_status IS NULL OR p_status = 'FUTURE'
        THEN format('Open it with `monthend period open %s`.', p_period)
    WHEN p_status = 'CLOSED'
        THEN format('Post the correction in an open period, or reopen it with `monthend '
                    'period reopen %s --reason TEXT`; rows dated in it are dead-lettered '
                    'PERIOD_CLOSED.', p_period)
    WHEN p_status <> 'OPEN'
        THEN format('It is %s, which is final: post the correction in an open period; rows '
                    'dated in it are dead-lettered PERIOD_CLOSED.', p_status)
END;
