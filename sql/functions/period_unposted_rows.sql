-- The source rows dated in a period that are neither posted by a committed
-- batch nor dead-lettered (open): how many, and their amount per currency.
-- The period's close refuses while there are any (gl.period_close_checks),
-- and so does its period-end (batch.preflight_period_end): its written
-- premium must be complete.
CREATE OR REPLACE FUNCTION gl.period_unposted_rows(p_period text,
                                                  OUT rows bigint, OUT amounts jsonb)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH bounds AS (
        SELECT coalesce(ap.start_date, to_date(p_period, 'YYYY-MM')) AS start_date,
               coalesce(ap.end_date,
                        (to_date(p_period, 'YYYY-MM') + interval '1 month - 1 day')::date)
                   AS end_date
        FROM (SELECT) AS one
        LEFT JOIN gl.accounting_period AS ap ON ap.period = p_period
    ), unposted AS (
        SELECT s.currency, count(*) AS n, sum(s.amount) AS amount
        FROM bounds AS b
        JOIN subledger.source_transaction AS s
          ON s.txn_date BETWEEN b.start_date AND b.end_date
        WHERE NOT EXISTS (
                  SELECT FROM batch.live_posting AS lp
                  JOIN batch.run AS r ON r.batch_id = lp.batch_id AND r.status = 'COMMITTED'
                  WHERE lp.period = p_period AND lp.source_type = s.source_type
                    AND lp.source_id = s.source_id)
          AND NOT EXISTS (SELECT FROM batch.dead_letter AS d
                          WHERE d.status = 'OPEN' AND d.source_type = s.source_type
                            AND d.source_id = s.source_id)
        GROUP BY s.currency
    )
    SELECT coalesce(sum(u.n), 0),
           coalesce(jsonb_object_agg(coalesce(u.currency, '?'), coalesce(u.amount, 0)::text)
                        FILTER (WHERE u.n > 0), '{}')
    FROM unposted AS u
$$;

GRANT EXECUTE ON FUNCTION gl.period_unposted_rows(text) TO monthend_runner, monthend_auditor;
