-- Synthetic source data for a period, generated set-based in the database.
-- Opens the period if it has no row (gl.open_period: audited like any
-- opening; a FUTURE period is left FUTURE, its rows wait for it to open) and
-- adds the FX rates and the period-end's closing rates it lacks. p_txns rows: 70% premium
-- (new business, renewals, endorsements, cancellations), 30% claims (loss and
-- expense payments, recoveries); log-uniform amounts from 50 to 250,000 in
-- the currency's minor units, six currencies (JPY with 0 and BHD with 3 minor
-- units among them), six lines of business, dates spread over the month.
-- Each premium row is written on a policy of its own, added to
-- subledger.policy with the row's line of business: a term of 6 months (30%)
-- or 12 (70%), [inception_date, inception_date + the term). A new business or
-- renewal row is written at inception, on its own date; an endorsement or a
-- cancellation falls on a policy incepted earlier, up to a year before it
-- (half a year for a 6-month term), always inside the term. Policy ids
-- continue after the largest so far, like the transaction ids. A claims row
-- names one of the load's policies, drawn at random (claims are not checked
-- against policies; a load that made no policy names the latest one there is,
-- or policy 1).
-- A fraction p_bad_fraction of rows is spoiled, evenly over every kind the
-- pre-flight must catch, each row for one reason only: a premium row spoiled
-- otherwise than by a missing policy_id still has its policy, covering the
-- row's date as generated (a row moved out of every period is dead-lettered
-- for its date before any policy check); a row without a policy_id has no
-- policy. p_policy_rows is the number of policies made.
-- Every draw is a hash of (seed, row, attribute), so the same seed gives the
-- same rows and policies, whatever plan or parallelism runs it.

-- The generator before it returned its policies, with one OUT parameter
-- fewer: a CALL with seven arguments would match both.
DROP PROCEDURE IF EXISTS subledger.generate_transactions(text, bigint, numeric, bigint,
                                                         bigint, bigint, bigint);

CREATE OR REPLACE PROCEDURE subledger.generate_transactions(
    p_period       text,
    p_txns         bigint,
    p_bad_fraction numeric DEFAULT 0,
    p_seed         bigint DEFAULT 1,
    INOUT p_premium_rows bigint DEFAULT NULL,
    INOUT p_claim_rows   bigint DEFAULT NULL,
    INOUT p_bad_rows     bigint DEFAULT NULL,
    INOUT p_policy_rows  bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_start       date;
    v_days        integer;
    v_premium_n   bigint;
    v_premium_id  bigint;
    v_claim_id    bigint;
    v_policy_id   bigint;
    v_policy_n    bigint;
    v_claim_pol   bigint;
    v_claim_pol_n bigint;
BEGIN
    IF p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' THEN
        RAISE EXCEPTION 'period % is not of the form YYYY-MM', p_period
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF p_txns < 0 THEN
        RAISE EXCEPTION 'the number of transactions must be >= 0, not %', p_txns
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF p_bad_fraction < 0 OR p_bad_fraction > 1 THEN
        RAISE EXCEPTION 'the bad-row fraction must be between 0 and 1, not %', p_bad_fraction
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_start := to_date(p_period, 'YYYY-MM');
    v_days := ((v_start + interval '1 month')::date - v_start);

    IF NOT EXISTS (SELECT FROM gl.accounting_period AS ap WHERE ap.period = p_period) THEN
        CALL gl.open_period(p_period, 'opened by the synthetic-data generator');
    END IF;
    INSERT INTO gl.fx_rate (period, currency, rate)
    VALUES (p_period, 'USD', 1), (p_period, 'EUR', 1.0842), (p_period, 'GBP', 1.2671),
           (p_period, 'CAD', 0.7413), (p_period, 'JPY', 0.006712), (p_period, 'BHD', 2.6525)
    ON CONFLICT (period, currency) DO NOTHING;
    -- The period-end's closing rates: the month's rates moved a little.
    INSERT INTO gl.fx_closing_rate (period, currency, rate)
    VALUES (p_period, 'EUR', 1.0915), (p_period, 'GBP', 1.2604), (p_period, 'CAD', 0.7452),
           (p_period, 'JPY', 0.006655), (p_period, 'BHD', 2.6525)
    ON CONFLICT (period, currency) DO NOTHING;
    PERFORM gl.ensure_period_partitions(p_period);

    v_premium_n := round(p_txns * 0.7)::bigint;
    -- Ids continue after the largest so far: loads for several periods coexist.
    SELECT coalesce(max(txn_id), 0) INTO v_premium_id FROM subledger.premium_transaction;
    SELECT coalesce(max(claim_id), 0) INTO v_claim_id FROM subledger.claims_transaction;
    SELECT coalesce(max(policy_id), 0) INTO v_policy_id FROM subledger.policy;

    -- The premium rows that get a policy: all but those spoiled by a missing
    -- policy_id (bad kind 8, drawn as below from u_bad and u_kind). Counted
    -- first, so that the claims can draw their policy among the load's.
    SELECT count(*) INTO v_policy_n
      FROM generate_series(1, v_premium_n) AS g (i)
     WHERE NOT ((hashint8extended(g.i, p_seed * 16 + 7) & 281474976710655)::float8
                    / 281474976710656 < p_bad_fraction
                AND floor((hashint8extended(g.i, p_seed * 16 + 8) & 281474976710655)::float8
                              / 281474976710656 * 9)::integer = 8);
    IF v_policy_n > 0 THEN
        v_claim_pol := v_policy_id + 1;
        v_claim_pol_n := v_policy_n;
    ELSE
        v_claim_pol := greatest(v_policy_id, 1);
        v_claim_pol_n := 1;
    END IF;

    -- Shape of the scratch table below, for plpgsql_check (a no-op at run time).
    PERFORM 'PRAGMA:TABLE: generated_row (i bigint, is_premium boolean, txn_type text, '
            'currency text, line_of_business text, txn_date date, policy_id bigint, '
            'inception_date date, term_months integer, is_bad boolean, bad_kind integer, '
            'amount numeric)';
    CREATE TEMPORARY TABLE generated_row ON COMMIT DROP AS
    WITH draw AS (
        SELECT g.i,
               g.i <= v_premium_n AS is_premium,
               -- u(k): a uniform draw in [0, 1) for attribute k of row i.
               (hashint8extended(g.i, p_seed * 16 + 1) & 281474976710655)::float8 / 281474976710656 AS u_type,
               (hashint8extended(g.i, p_seed * 16 + 2) & 281474976710655)::float8 / 281474976710656 AS u_amount,
               (hashint8extended(g.i, p_seed * 16 + 3) & 281474976710655)::float8 / 281474976710656 AS u_currency,
               (hashint8extended(g.i, p_seed * 16 + 4) & 281474976710655)::float8 / 281474976710656 AS u_lob,
               (hashint8extended(g.i, p_seed * 16 + 5) & 281474976710655)::float8 / 281474976710656 AS u_day,
               (hashint8extended(g.i, p_seed * 16 + 6) & 281474976710655)::float8 / 281474976710656 AS u_policy,
               (hashint8extended(g.i, p_seed * 16 + 7) & 281474976710655)::float8 / 281474976710656 AS u_bad,
               (hashint8extended(g.i, p_seed * 16 + 8) & 281474976710655)::float8 / 281474976710656 AS u_kind,
               (hashint8extended(g.i, p_seed * 16 + 9) & 281474976710655)::float8 / 281474976710656 AS u_term,
               (hashint8extended(g.i, p_seed * 16 + 10) & 281474976710655)::float8 / 281474976710656 AS u_inception
        FROM generate_series(1, p_txns) AS g (i)
    ), shaped AS (
        SELECT d.i, d.is_premium,
               CASE WHEN d.is_premium THEN
                    CASE WHEN d.u_type < 0.40 THEN 'NEW_BUSINESS'
                         WHEN d.u_type < 0.75 THEN 'RENEWAL'
                         WHEN d.u_type < 0.90 THEN 'ENDORSEMENT'
                         ELSE 'CANCELLATION' END
               ELSE CASE WHEN d.u_type < 0.70 THEN 'LOSS_PAYMENT'
                         WHEN d.u_type < 0.90 THEN 'EXPENSE_PAYMENT'
                         ELSE 'RECOVERY' END
               END AS txn_type,
               CASE WHEN d.u_currency < 0.70 THEN 'USD'
                    WHEN d.u_currency < 0.80 THEN 'EUR'
                    WHEN d.u_currency < 0.87 THEN 'GBP'
                    WHEN d.u_currency < 0.93 THEN 'CAD'
                    WHEN d.u_currency < 0.98 THEN 'JPY'
                    ELSE 'BHD' END AS currency,
               (ARRAY['AUTO', 'HOME', 'COMMPROP', 'GENLIAB', 'WORKCOMP', 'MARINE'])
                   [1 + floor(d.u_lob * d.u_lob * 6)::integer] AS line_of_business,
               v_start + floor(d.u_day * v_days)::integer AS txn_date,
               d.u_policy,
               CASE WHEN d.u_term < 0.30 THEN 6 ELSE 12 END AS term_months,
               d.u_inception,
               -- Log-uniform from 50 to 250,000 USD-equivalent: many small, a few large.
               50 * exp(d.u_amount * ln(5000)) AS usd_amount,
               d.u_bad < p_bad_fraction AS is_bad,
               floor(d.u_kind * 9)::integer AS bad_kind
        FROM draw AS d
    ), placed AS (
        SELECT s.*,
               s.is_premium AND NOT (s.is_bad AND s.bad_kind = 8) AS has_policy,
               -- New business and renewals are written at inception. An
               -- endorsement or cancellation falls on a policy incepted up to
               -- 364 days before it (a 12-month term is 365 days or more) or
               -- 180 (a 6-month term is 181 days or more): inside the term.
               s.txn_date - CASE WHEN s.txn_type IN ('ENDORSEMENT', 'CANCELLATION')
                                 THEN floor(s.u_inception
                                            * CASE s.term_months WHEN 6 THEN 181 ELSE 365 END)::integer
                                 ELSE 0 END AS inception_date
        FROM shaped AS s
    )
    SELECT p.i, p.is_premium, p.txn_type, p.currency, p.line_of_business, p.txn_date,
           -- A premium row's own policy, numbered in row order; a claim's, one
           -- of the load's.
           CASE WHEN p.has_policy
                THEN v_policy_id + count(*) FILTER (WHERE p.has_policy)
                                       OVER (ORDER BY p.i ROWS UNBOUNDED PRECEDING)
                WHEN NOT p.is_premium
                THEN v_claim_pol + floor(p.u_policy * v_claim_pol_n)::bigint
           END AS policy_id,
           CASE WHEN p.has_policy THEN p.inception_date END AS inception_date,
           CASE WHEN p.has_policy THEN p.term_months END AS term_months,
           p.is_bad, p.bad_kind,
           round((p.usd_amount * CASE p.currency WHEN 'JPY' THEN 150 WHEN 'BHD' THEN 0.377
                                                 WHEN 'EUR' THEN 0.92 WHEN 'GBP' THEN 0.79
                                                 WHEN 'CAD' THEN 1.35 ELSE 1 END)::numeric,
                 CASE p.currency WHEN 'JPY' THEN 0 WHEN 'BHD' THEN 3 ELSE 2 END) AS amount
    FROM placed AS p;

    -- The policies, from the rows as generated, before any is spoiled: a row
    -- spoiled for another reason than its policy_id keeps a policy of its own
    -- line of business whose term covers its date.
    INSERT INTO subledger.policy (policy_id, line_of_business, inception_date, expiry_date)
    SELECT g.policy_id, g.line_of_business, g.inception_date,
           (g.inception_date + make_interval(months => g.term_months))::date
    FROM generated_row AS g WHERE g.is_premium AND g.inception_date IS NOT NULL
    ORDER BY g.policy_id;
    GET DIAGNOSTICS p_policy_rows = ROW_COUNT;

    -- Spoil the bad rows, one kind each: 0 null amount, 1 zero, 2 negative,
    -- 3 unknown currency, 4 unknown transaction type, 5 dated outside any
    -- period, 6 too many decimals, 7 unknown line of business, 8 no policy.
    UPDATE generated_row AS g
       SET amount = CASE g.bad_kind WHEN 0 THEN NULL WHEN 1 THEN 0 WHEN 2 THEN -g.amount
                                    WHEN 6 THEN g.amount + 0.0001 ELSE g.amount END,
           currency = CASE WHEN g.bad_kind = 3 THEN 'XXX' ELSE g.currency END,
           txn_type = CASE WHEN g.bad_kind = 4 THEN 'UNKNOWN_TYPE' ELSE g.txn_type END,
           txn_date = CASE WHEN g.bad_kind = 5 THEN g.txn_date - interval '100 years'
                           ELSE g.txn_date END,
           line_of_business = CASE WHEN g.bad_kind = 7 THEN 'UNKNOWN_LOB'
                                   ELSE g.line_of_business END,
           policy_id = CASE WHEN g.bad_kind = 8 THEN NULL ELSE g.policy_id END
     WHERE g.is_bad;

    INSERT INTO subledger.premium_transaction (txn_id, policy_id, payment_date, txn_type,
                                               line_of_business, amount, currency)
    SELECT v_premium_id + g.i, g.policy_id, g.txn_date, g.txn_type, g.line_of_business,
           g.amount, g.currency
    FROM generated_row AS g WHERE g.is_premium ORDER BY g.i;
    GET DIAGNOSTICS p_premium_rows = ROW_COUNT;

    INSERT INTO subledger.claims_transaction (claim_id, policy_id, claim_date, txn_type,
                                              line_of_business, amount, currency)
    SELECT v_claim_id + g.i - v_premium_n, g.policy_id, g.txn_date, g.txn_type,
           g.line_of_business, g.amount, g.currency
    FROM generated_row AS g WHERE NOT g.is_premium ORDER BY g.i;
    GET DIAGNOSTICS p_claim_rows = ROW_COUNT;

    SELECT count(*) INTO p_bad_rows FROM generated_row AS g WHERE g.is_bad;
    DROP TABLE generated_row;
    -- A bulk load leaves the planner's statistics behind until autovacuum
    -- catches up; the run that follows plans its range joins from them.
    ANALYZE subledger.premium_transaction;
    ANALYZE subledger.claims_transaction;
    ANALYZE subledger.policy;
END
$$;
