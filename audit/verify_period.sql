-- Verifies a closed period's seal and balances against what they vouch for.
-- One row per problem; no rows: all is well (a period that is not closed has
-- nothing sealed to verify, and gives none).
--   SEAL_MISSING         the period is closed but carries no seal
--   SEAL_MISMATCH        audit.period_seal_digest over the stored balances and
--                        seal batches differs from the stored seal
--   SEAL_NOT_IN_CHAIN    the stored seal is not the one the latest
--                        PERIOD_CLOSED event of the period sealed
--   BATCH_DIFFERS        the seal's batches are not the period's committed
--                        batches with their digests, in commit order
--   BALANCE_DIFFERS      a balance row's movements are not the ledger's
--                        (gl.period_movement), per account and currency
--   OPENING_DIFFERS      a balance row's opening is not the previous closed
--                        period's closing
-- Reads the period's lines once.
CREATE OR REPLACE FUNCTION audit.verify_period(p_period text)
RETURNS TABLE (problem text, detail text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_period   gl.accounting_period%ROWTYPE;
    v_previous text;
    v_chained  text;
    v_digest   bytea;
BEGIN
    SELECT * INTO v_period FROM gl.accounting_period AS ap WHERE ap.period = p_period;
    IF NOT FOUND OR v_period.status IN ('FUTURE', 'OPEN') THEN
        RETURN;
    END IF;
    IF v_period.seal_digest IS NULL THEN
        problem := 'SEAL_MISSING';
        detail := format('period %s is %s without a seal', p_period, v_period.status);
        RETURN NEXT;
        RETURN;
    END IF;

    v_digest := audit.period_seal_digest(p_period);
    IF v_digest IS DISTINCT FROM v_period.seal_digest THEN
        problem := 'SEAL_MISMATCH';
        detail := format('stored %s, recomputed %s', encode(v_period.seal_digest, 'hex'),
                         encode(v_digest, 'hex'));
        RETURN NEXT;
    END IF;

    SELECT l.payload ->> 'seal_digest' INTO v_chained
      FROM audit.log AS l
     WHERE l.event = 'PERIOD_CLOSED' AND l.payload ->> 'period' = p_period
     ORDER BY l.seq DESC LIMIT 1;
    IF v_chained IS DISTINCT FROM encode(v_period.seal_digest, 'hex') THEN
        problem := 'SEAL_NOT_IN_CHAIN';
        detail := format('stored %s, the latest PERIOD_CLOSED event sealed %s',
                         encode(v_period.seal_digest, 'hex'), coalesce(v_chained, 'nothing'));
        RETURN NEXT;
    END IF;

    RETURN QUERY
    WITH committed AS (
        SELECT row_number() OVER (ORDER BY c.seq, r.batch_id)::integer AS seal_order,
               r.batch_id, r.digest
        FROM batch.run AS r
        LEFT JOIN (SELECT l.batch_id, min(l.seq) AS seq FROM audit.log AS l
                   WHERE l.event = 'BATCH_COMMITTED' GROUP BY l.batch_id) AS c
               ON c.batch_id = r.batch_id
        WHERE r.period = p_period AND r.status = 'COMMITTED'
    )
    SELECT 'BATCH_DIFFERS',
           format('seal order %s: sealed batch %s digest %s, committed batch %s digest %s',
                  coalesce(s.seal_order, c.seal_order), s.batch_id, encode(s.digest, 'hex'),
                  c.batch_id, encode(c.digest, 'hex'))
    FROM (SELECT * FROM gl.period_seal_batch AS x WHERE x.period = p_period) AS s
    FULL JOIN committed AS c ON c.seal_order = s.seal_order
    WHERE s.batch_id IS DISTINCT FROM c.batch_id OR s.digest IS DISTINCT FROM c.digest
    ORDER BY coalesce(s.seal_order, c.seal_order);

    RETURN QUERY
    WITH movement AS (
        SELECT m.account_code, m.currency, sum(m.lines) AS lines, sum(m.debit) AS debit,
               sum(m.credit) AS credit, sum(m.functional_debit) AS functional_debit,
               sum(m.functional_credit) AS functional_credit
        FROM gl.period_movement(p_period) AS m GROUP BY m.account_code, m.currency
    )
    SELECT 'BALANCE_DIFFERS',
           format('%s %s: balance lines %s, debit %s, credit %s, functional %s / %s; '
                  'ledger lines %s, debit %s, credit %s, functional %s / %s',
                  coalesce(b.account_code, m.account_code), coalesce(b.currency, m.currency),
                  coalesce(b.lines, 0), coalesce(b.debit, 0), coalesce(b.credit, 0),
                  coalesce(b.functional_debit, 0), coalesce(b.functional_credit, 0),
                  coalesce(m.lines, 0), coalesce(m.debit, 0), coalesce(m.credit, 0),
                  coalesce(m.functional_debit, 0), coalesce(m.functional_credit, 0))
    FROM (SELECT * FROM gl.period_balance AS x WHERE x.period = p_period) AS b
    FULL JOIN movement AS m ON m.account_code = b.account_code AND m.currency = b.currency
    WHERE coalesce(b.lines, 0) <> coalesce(m.lines, 0)
       OR coalesce(b.debit, 0) <> coalesce(m.debit, 0)
       OR coalesce(b.credit, 0) <> coalesce(m.credit, 0)
       OR coalesce(b.functional_debit, 0) <> coalesce(m.functional_debit, 0)
       OR coalesce(b.functional_credit, 0) <> coalesce(m.functional_credit, 0)
    ORDER BY 2;

    SELECT max(ap.period) INTO v_previous
      FROM gl.accounting_period AS ap WHERE ap.period < p_period;
    RETURN QUERY
    SELECT 'OPENING_DIFFERS',
           format('%s %s: opening %s, functional %s; %s closed at %s, functional %s',
                  coalesce(b.account_code, o.account_code), coalesce(b.currency, o.currency),
                  coalesce(b.opening, 0), coalesce(b.functional_opening, 0),
                  coalesce(v_previous, 'no earlier period'), coalesce(o.closing, 0),
                  coalesce(o.functional_closing, 0))
    FROM (SELECT * FROM gl.period_balance AS x WHERE x.period = p_period) AS b
    FULL JOIN (SELECT * FROM gl.period_balance AS y
               WHERE y.period = v_previous
                 AND (y.closing <> 0 OR y.functional_closing <> 0)) AS o
           ON o.account_code = b.account_code AND o.currency = b.currency
    WHERE coalesce(b.opening, 0) <> coalesce(o.closing, 0)
       OR coalesce(b.functional_opening, 0) <> coalesce(o.functional_closing, 0)
    ORDER BY 2;
END
$$;

GRANT EXECUTE ON FUNCTION audit.verify_period(text) TO monthend_runner, monthend_auditor;
