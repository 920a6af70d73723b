-- What to do to post into a period of status p_status (NULL: the period has no
-- row): the hint start_run, pre-flight and the lifecycle give when a period is
-- not OPEN, ending with what becomes of rows dated in a closed period under
-- gl.setting.late_row_policy. NULL for an OPEN period.
CREATE OR REPLACE FUNCTION gl.period_posting_hint(p_period text, p_status text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
RETURN (
    SELECT CASE
        WHEN p_status IS NULL OR p_status = 'FUTURE'
            THEN format('Open it with `monthend period open %s`.', p_period)
        WHEN p_status = 'CLOSED'
            THEN format('Post the correction in an open period, or reopen it with `monthend '
                        'period reopen %s --reason TEXT`; rows dated in it are %s.',
                        p_period, late.fate)
        WHEN p_status <> 'OPEN'
            THEN format('It is %s, which is final: post the correction in an open period; '
                        'rows dated in it are %s.', p_status, late.fate)
    END
    FROM (SELECT CASE st.late_row_policy
                     WHEN 'NEXT_OPEN_PERIOD' THEN 'posted by the next open period''s run'
                     ELSE 'dead-lettered PERIOD_CLOSED' END AS fate
          FROM gl.setting AS st) AS late);
