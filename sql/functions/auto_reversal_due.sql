-- The period-end batch whose FX revaluation the first batch of p_period must
-- reverse first: the previous period's period-end batch, committed, with
-- revaluation entries that no reversal (committed or under way) has taken
-- yet. NULL when nothing is due. batch.start_run and batch.start_period_end
-- refuse while one is due; batch.start_auto_reversal starts it.
CREATE OR REPLACE FUNCTION batch.auto_reversal_due(p_period text)
RETURNS bigint
LANGUAGE sql
STABLE
AS $$
    SELECT r.batch_id
    FROM batch.run AS r
    WHERE r.period = to_char(to_date(p_period, 'YYYY-MM') - interval '1 month', 'YYYY-MM')
      AND r.kind = 'PERIOD_END' AND r.status = 'COMMITTED'
      AND EXISTS (SELECT FROM batch.source_claim AS c
                  WHERE c.period = r.period AND c.source_type = 'FX_REVALUATION'
                    AND c.batch_id = r.batch_id
                    AND NOT EXISTS (SELECT FROM batch.source_reversal AS sr
                                    JOIN batch.run AS rb ON rb.batch_id = sr.batch_id
                                    WHERE sr.period = c.period AND sr.source_type = c.source_type
                                      AND sr.source_id = c.source_id
                                      AND sr.generation = c.generation
                                      AND rb.status <> 'CANCELLED'))
    ORDER BY r.batch_id DESC
    LIMIT 1
$$;

GRANT EXECUTE ON FUNCTION batch.auto_reversal_due(text) TO monthend_runner, monthend_auditor;
