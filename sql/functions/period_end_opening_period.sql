-- The period whose closing balances (gl.period_balance, written at its close)
-- a period-end of p_period starts the monetary accounts' balances from: the
-- latest period before it that is closed (or locked, archived, restored)
-- with every period before it closed too. The batches of the periods after
-- it, up to p_period, make up the rest. NULL: none is, the balances are
-- summed from the first batch.
CREATE OR REPLACE FUNCTION batch.period_end_opening_period(p_period text)
RETURNS text
LANGUAGE sql
STABLE
AS $$
    SELECT max(ap.period)
    FROM gl.accounting_period AS ap
    WHERE ap.period < p_period
      AND ap.status IN ('CLOSED', 'PERMANENTLY_CLOSED', 'ARCHIVED', 'RESTORED')
      AND NOT EXISTS (SELECT FROM gl.accounting_period AS o
                      WHERE o.period < ap.period
                        AND o.status NOT IN ('CLOSED', 'PERMANENTLY_CLOSED', 'ARCHIVED',
                                             'RESTORED'))
$$;
