-- The period-end batch whose entries and UPR detail stand for a period: its
-- latest committed PERIOD_END batch that no committed reversal (asked for,
-- not the automatic reversal of its revaluation) has corrected. NULL when the
-- period has none. The opening UPR of the next period-end, the period's close
-- and the reports read it.
CREATE OR REPLACE FUNCTION gl.period_end_batch(p_period text)
RETURNS bigint
LANGUAGE sql
STABLE
AS $$
    SELECT r.batch_id
    FROM batch.run AS r
    WHERE r.period = p_period AND r.kind = 'PERIOD_END' AND r.status = 'COMMITTED'
      AND NOT EXISTS (SELECT FROM batch.run AS x
                      WHERE x.reverses_batch_id = r.batch_id AND x.kind = 'REVERSAL'
                        AND x.status = 'COMMITTED')
    ORDER BY r.batch_id DESC
    LIMIT 1
$$;

GRANT EXECUTE ON FUNCTION gl.period_end_batch(text) TO monthend_runner, monthend_auditor;
