-- Closes an OPEN period. Takes the period's advisory lock (as pre-flight does,
-- so it cannot race a run) and freezes the source tables for the length of
-- the close (SHARE: an upstream load waits, and one in flight finishes first
-- and is seen), then:
--   1. refuses unless gl.period_transition_refusal allows OPEN -> CLOSED
--      (every earlier period closed: closes are sequential);
--   2. runs gl.period_close_checks and records them in gl.period_check; if
--      one fails, raises naming each failed check with what to do. SQLSTATE
--      55000 (exit 2: something to do first), 23514 when the ledger itself
--      does not balance or is not what the runs recorded (exit 1). The whole
--      close rolls back, the check rows with it: nothing is written;
--   3. writes the balances (gl.period_balance: opening = the previous
--      period's closing, per account and currency, plus this period's
--      movements) and the committed batches in commit order
--      (gl.period_seal_batch), from one read of the lines;
--   4. seals: audit.period_seal_digest over the previous seal, the batch
--      digests and the balance rows; the period becomes CLOSED with its seal,
--      and the PERIOD_CLOSED event carries seal, batches, balance count and
--      the carried dead letters (how many, how much).
-- p_carry_dead_letters: close although rows dated in the period have open
-- dead letters; they stay open (a later fix of such a row dead-letters it
-- PERIOD_CLOSED).
CREATE OR REPLACE PROCEDURE gl.close_period(
    p_period             text,
    p_carry_dead_letters boolean DEFAULT false,
    p_reason             text DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at          timestamptz := clock_timestamp();
    v_status      text;
    v_refusal     record;
    v_check       record;
    v_failures    text[] := '{}'::text[];
    v_hints       text[] := '{}'::text[];
    v_ledger_bad  boolean := false;
    v_carried     jsonb := '{}';
    v_previous    text;
    v_rows        bigint;
    v_batches     jsonb;
    v_seal        bytea;
BEGIN
    LOCK TABLE subledger.premium_transaction, subledger.claims_transaction IN SHARE MODE;
    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p_period));
    -- Rows locked in period order: the earlier periods cannot be reopened,
    -- nor this one changed, until the close commits.
    PERFORM FROM gl.accounting_period AS ap WHERE ap.period < p_period
      ORDER BY ap.period FOR SHARE;
    SELECT ap.status INTO v_status FROM gl.accounting_period AS ap
     WHERE ap.period = p_period FOR UPDATE;

    IF v_status IS NULL THEN
        RAISE EXCEPTION 'accounting period % does not exist', p_period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Open it with `monthend period open %s`.', p_period);
    END IF;
    SELECT * INTO v_refusal FROM gl.period_transition_refusal(p_period, v_status, 'CLOSED');
    IF v_refusal.message IS NOT NULL THEN
        RAISE EXCEPTION '%', v_refusal.message
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = v_refusal.hint;
    END IF;

    FOR v_check IN SELECT * FROM gl.period_close_checks(p_period, p_carry_dead_letters) LOOP
        INSERT INTO gl.period_check (period, closed_at, check_name, status, expected, actual,
                                     detail)
        VALUES (p_period, v_at, v_check.check_name,
                CASE WHEN v_check.passed THEN 'PASS' ELSE 'FAIL' END, v_check.expected,
                v_check.actual, v_check.detail);
        IF NOT v_check.passed THEN
            v_failures := v_failures || format('%s (expected %s; found %s)',
                                               v_check.check_name, v_check.expected,
                                               v_check.actual);
            v_hints := v_hints || v_check.hint;
            v_ledger_bad := v_ledger_bad
                            OR v_check.check_name IN ('ledger_balanced', 'ledger_matches_batches');
        ELSIF v_check.check_name = 'dead_letters' THEN
            v_carried := v_check.detail;
        END IF;
    END LOOP;
    IF cardinality(v_failures) > 0 THEN
        RAISE EXCEPTION 'period % cannot be closed: %', p_period,
                        array_to_string(v_failures, '; ')
            USING ERRCODE = CASE WHEN v_ledger_bad THEN 'check_violation'
                                 ELSE 'object_not_in_prerequisite_state' END,
                  HINT = array_to_string(v_hints, ' ');
    END IF;

    SELECT max(ap.period) INTO v_previous FROM gl.accounting_period AS ap
     WHERE ap.period < p_period;
    -- One read of the period's lines for both the balances and the batches.
    WITH movement AS MATERIALIZED (
        SELECT * FROM gl.period_movement(p_period)
    ), balances AS (
        INSERT INTO gl.period_balance (period, account_code, currency, lines, opening, debit,
                                       credit, closing, functional_opening, functional_debit,
                                       functional_credit, functional_closing)
        SELECT p_period, coalesce(m.account_code, o.account_code),
               coalesce(m.currency, o.currency), coalesce(m.lines, 0),
               coalesce(o.closing, 0), coalesce(m.debit, 0), coalesce(m.credit, 0),
               coalesce(o.closing, 0) + coalesce(m.debit, 0) - coalesce(m.credit, 0),
               coalesce(o.functional_closing, 0), coalesce(m.functional_debit, 0),
               coalesce(m.functional_credit, 0),
               coalesce(o.functional_closing, 0) + coalesce(m.functional_debit, 0)
                   - coalesce(m.functional_credit, 0)
        FROM (SELECT x.account_code, x.currency, sum(x.lines) AS lines, sum(x.debit) AS debit,
                     sum(x.credit) AS credit, sum(x.functional_debit) AS functional_debit,
                     sum(x.functional_credit) AS functional_credit
              FROM movement AS x GROUP BY x.account_code, x.currency) AS m
        FULL JOIN (SELECT b.account_code, b.currency, b.closing, b.functional_closing
                   FROM gl.period_balance AS b
                   WHERE b.period = v_previous
                     AND (b.closing <> 0 OR b.functional_closing <> 0)) AS o
               ON o.account_code = m.account_code AND o.currency = m.currency
        RETURNING 1
    ), sealed AS (
        INSERT INTO gl.period_seal_batch (period, seal_order, batch_id, digest, lines,
                                          functional_debit, functional_credit)
        SELECT p_period, row_number() OVER (ORDER BY c.seq, r.batch_id), r.batch_id, r.digest,
               coalesce(t.lines, 0), coalesce(t.functional_debit, 0),
               coalesce(t.functional_credit, 0)
        FROM batch.run AS r
        LEFT JOIN (SELECT l.batch_id, min(l.seq) AS seq FROM audit.log AS l
                   WHERE l.event = 'BATCH_COMMITTED' GROUP BY l.batch_id) AS c
               ON c.batch_id = r.batch_id
        LEFT JOIN (SELECT x.batch_id, sum(x.lines) AS lines,
                          sum(x.functional_debit) AS functional_debit,
                          sum(x.functional_credit) AS functional_credit
                   FROM movement AS x GROUP BY x.batch_id) AS t ON t.batch_id = r.batch_id
        WHERE r.period = p_period AND r.status = 'COMMITTED'
        RETURNING seal_order, batch_id, digest
    )
    SELECT (SELECT count(*) FROM balances),
           (SELECT coalesce(jsonb_agg(jsonb_build_object('batch_id', s.batch_id,
                                                         'digest', encode(s.digest, 'hex'))
                                      ORDER BY s.seal_order), '[]')
              FROM sealed AS s)
      INTO v_rows, v_batches;

    v_seal := audit.period_seal_digest(p_period);
    UPDATE gl.accounting_period
       SET status = 'CLOSED', closed_at = v_at, seal_digest = v_seal,
           status_reason = p_reason,
           status_detail = jsonb_build_object(
               'seal_digest', encode(v_seal, 'hex'), 'previous_period', v_previous,
               'batches', v_batches, 'balance_rows', v_rows,
               'carried_dead_letters', CASE WHEN (v_carried ->> 'carried')::boolean
                                            THEN jsonb_build_object(
                                                'rows', v_carried -> 'rows',
                                                'amount', v_carried -> 'amount') END)
     WHERE period = p_period;
END
$$;

GRANT EXECUTE ON PROCEDURE gl.close_period(text, boolean, text) TO monthend_runner;
