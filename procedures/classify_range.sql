-- The classification of pre-flight, for one range of a run: its candidate
-- rows (the ids the caller put in the temporary table preflight_row, rows of
-- the range's source type dated in its claims period) are read once, in one
-- statement, and each is either dead-lettered with its reason or claimed for
-- the batch (batch.source_claim) with the offset of its first journal entry
-- counted from the range's first entry (so the range needs no other range's
-- count: allocation places the ranges by a prefix sum, see
-- batch.range.claim_offset_base). The control totals of the batch are added
-- to with what the range classified, its open dead letters of rows now
-- claimed are marked for the commit to resolve, and the range records its
-- rows, entries and bounds and moves to stage PROCESS.
-- Called by batch.preflight_range (a range of the period's own rows, on a
-- worker) and by batch.preflight (the late rows of earlier periods, few, in
-- its own transaction). The caller holds the rows still: row locks, or the
-- exclusive locks of the late rows' periods.
CREATE OR REPLACE PROCEDURE batch.classify_range(p_range_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started       timestamptz := clock_timestamp();
    v_range         batch.range%ROWTYPE;
    v_functional_mu integer;
    v_start         date;
    v_end           date;
    v_risky         bigint[];
    v_claimed       bigint;
    v_je_count      bigint;
    v_lo            bigint;
    v_hi            bigint;
BEGIN
    SELECT * INTO STRICT v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id;
    SELECT ap.start_date, ap.end_date INTO STRICT v_start, v_end
      FROM gl.accounting_period AS ap WHERE ap.period = v_range.claim_period;
    SELECT c.minor_units INTO STRICT v_functional_mu
      FROM gl.setting AS s JOIN gl.currency AS c ON c.code = s.functional_currency;
    ANALYZE preflight_row;

    -- Shape of the scratch tables, for plpgsql_check (a no-op at run time).
    PERFORM 'PRAGMA:TABLE: preflight_row (source_id bigint)';
    PERFORM 'PRAGMA:TABLE: preflight_candidate (source_type text, source_id bigint, '
            'policy_id bigint, txn_type text, amount numeric, currency char(3), '
            'line_of_business text, minor_units integer, known_lob boolean, '
            'template_count integer, fx_rate numeric, txn_date date, policy_known boolean, '
            'inception_date date, expiry_date date, generation integer, reason text)';
    CREATE TEMPORARY TABLE preflight_candidate ON COMMIT DROP AS
    SELECT k.*, coalesce(g.generation, 0) AS generation,
           CASE WHEN k.policy_id IS NULL THEN 'POLICY_MISSING'
                WHEN k.source_type = 'PREMIUM' AND NOT k.policy_known THEN 'POLICY_UNKNOWN'
                WHEN k.source_type = 'PREMIUM'
                     AND NOT (k.txn_date >= k.inception_date AND k.txn_date < k.expiry_date)
                    THEN 'OUTSIDE_POLICY_TERM'
                WHEN k.amount IS NULL THEN 'AMOUNT_NULL'
                WHEN k.amount = 0 THEN 'AMOUNT_ZERO'
                WHEN k.amount < 0 THEN 'AMOUNT_NEGATIVE'
                WHEN k.minor_units IS NULL THEN 'CURRENCY_UNKNOWN'
                WHEN k.amount <> round(k.amount, k.minor_units) THEN 'AMOUNT_PRECISION'
                WHEN NOT k.known_lob THEN 'LINE_OF_BUSINESS_UNKNOWN'
                WHEN k.template_count IS NULL THEN 'TXN_TYPE_UNKNOWN'
                WHEN k.fx_rate IS NULL THEN 'FX_RATE_MISSING'
           END AS reason
    FROM (
        SELECT s.source_type, s.source_id, s.policy_id, s.txn_type, s.amount, s.currency,
               s.line_of_business, c.minor_units,
               lob.code IS NOT NULL AS known_lob,
               tt.template_count,
               -- A row's FX rate is its own period's (the rounding rule's), a
               -- late row's included.
               coalesce(fx.rate, CASE WHEN s.currency = st.functional_currency
                                      THEN 1::numeric END) AS fx_rate,
               -- A premium row is written on a policy, inside its term.
               s.txn_date, pol.policy_id IS NOT NULL AS policy_known,
               pol.inception_date, pol.expiry_date
        FROM preflight_row AS w
        JOIN subledger.source_transaction AS s
          ON s.source_type = v_range.source_type AND s.source_id = w.source_id
        CROSS JOIN gl.setting AS st
        LEFT JOIN gl.currency AS c ON c.code = s.currency
        LEFT JOIN gl.line_of_business AS lob ON lob.code = s.line_of_business
        LEFT JOIN (SELECT DISTINCT t.source_type, t.txn_type, t.template_count
                   FROM gl.journal_template_index AS t) AS tt
               ON tt.source_type = s.source_type AND tt.txn_type = s.txn_type
        LEFT JOIN gl.fx_rate AS fx ON fx.period = v_range.claim_period AND fx.currency = s.currency
        -- One probe of the policy's primary key a premium row (LIMIT keeps
        -- the subquery from being flattened into a join, which hashed every
        -- policy for every range: 40 s of a 1M-row pre-flight measured).
        LEFT JOIN LATERAL (
            SELECT p.policy_id, p.inception_date, p.expiry_date
            FROM subledger.policy AS p
            WHERE s.source_type = 'PREMIUM' AND p.policy_id = s.policy_id
            LIMIT 1
        ) AS pol ON true
        WHERE s.source_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
          AND s.txn_date BETWEEN v_start AND v_end
    ) AS k
    LEFT JOIN (SELECT sr.source_id, max(sr.generation) + 1 AS generation
               FROM batch.source_reversal AS sr
               WHERE sr.period = v_range.claim_period AND sr.source_type = v_range.source_type
                 AND sr.source_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
               GROUP BY sr.source_id) AS g
           ON g.source_id = k.source_id;
    ANALYZE preflight_candidate;

    -- Only rows whose amount is small against a template's margin can round
    -- into a negative balancing line. Compute those exactly, with the rule's
    -- own view: an id list is a filter the view pushes below its window.
    -- Finding them is one comparison per row, amount < bound, against a bound
    -- computed once per transaction type and currency (a few dozen rows): the
    -- largest over the type's entries of
    --   any amount                            when the margin is not positive,
    --   ratio_lines * unit / margin           (rounding in the currency),
    --   (ratio_lines + 1) * unit_f / (fx * margin)  (in functional currency),
    -- widened by 1% so that rounding in the division can only send more rows
    -- to the exact check, never fewer.
    WITH bound AS (
        SELECT t.txn_type, c.code AS currency,
               max(CASE WHEN t.margin <= 0 OR r.fx_rate <= 0 THEN 'Infinity'::numeric
                        ELSE 1.01 * greatest(
                            t.ratio_lines * power(10::numeric, -c.minor_units) / t.margin,
                            (t.ratio_lines + 1) * power(10::numeric, -v_functional_mu)
                                / (r.fx_rate * t.margin))
                   END) AS below
        FROM gl.journal_template_index AS t
        CROSS JOIN gl.currency AS c
        JOIN gl.setting AS st ON true
        LEFT JOIN gl.fx_rate AS fx ON fx.period = v_range.claim_period AND fx.currency = c.code
        CROSS JOIN LATERAL (
            SELECT coalesce(fx.rate, CASE WHEN c.code = st.functional_currency
                                          THEN 1::numeric END) AS fx_rate
        ) AS r
        WHERE t.source_type = v_range.source_type
        GROUP BY t.txn_type, c.code
    )
    SELECT coalesce(array_agg(k.source_id), '{}') INTO v_risky
      FROM preflight_candidate AS k
      JOIN bound AS b ON b.txn_type = k.txn_type AND b.currency = k.currency
     WHERE k.reason IS NULL AND k.amount < b.below;

    IF cardinality(v_risky) > 0 THEN
        UPDATE preflight_candidate AS k
           SET reason = 'BALANCING_NEGATIVE'
          FROM (SELECT DISTINCT v.source_id FROM gl.journal_line_amount AS v
                 WHERE v.source_type = v_range.source_type AND v.source_id = ANY (v_risky)
                   AND v.is_balancing AND (v.line_amount < 0 OR v.line_amount_f < 0)) AS n
         WHERE k.source_id = n.source_id;
    END IF;

    INSERT INTO batch.dead_letter (source_type, source_id, batch_id, reason_code, detail,
                                   amount, currency)
    SELECT f.source_type, f.source_id, v_range.batch_id, f.reason,
           CASE f.reason
               WHEN 'POLICY_MISSING' THEN 'policy_id is missing'
               WHEN 'POLICY_UNKNOWN'
                   THEN format('policy %s is not in subledger.policy', f.policy_id)
               WHEN 'OUTSIDE_POLICY_TERM'
                   THEN format('dated %s, outside the term of policy %s (%s to %s)',
                               f.txn_date, f.policy_id, f.inception_date, f.expiry_date)
               WHEN 'AMOUNT_NULL' THEN 'amount is missing'
               WHEN 'AMOUNT_ZERO' THEN 'amount is zero'
               WHEN 'AMOUNT_NEGATIVE' THEN format('amount %s is negative', f.amount)
               WHEN 'CURRENCY_UNKNOWN'
                   THEN format('currency %s is not in gl.currency', coalesce(f.currency, 'NULL'))
               WHEN 'AMOUNT_PRECISION'
                   THEN format('amount %s has more decimals than %s allows (%s)',
                               f.amount, f.currency, f.minor_units)
               WHEN 'LINE_OF_BUSINESS_UNKNOWN'
                   THEN format('line of business %s is not in gl.line_of_business',
                               coalesce(f.line_of_business, 'NULL'))
               WHEN 'TXN_TYPE_UNKNOWN'
                   THEN format('no posting rules for %s transaction type %s',
                               f.source_type, coalesce(f.txn_type, 'NULL'))
               WHEN 'FX_RATE_MISSING'
                   THEN format('no FX rate for %s in period %s', f.currency,
                               v_range.claim_period)
               WHEN 'BALANCING_NEGATIVE'
                   THEN format('amount %s %s gives a negative balancing line under the '
                               '%s rules', f.amount, f.currency, f.txn_type)
           END,
           f.amount, f.currency
    FROM preflight_candidate AS f
    WHERE f.reason IS NOT NULL;

    -- Straight into the claims partition (no tuple routing per row), in
    -- primary-key order (each index insert lands on the rightmost leaf of the
    -- range's part of the index); a ROWS frame, since source_id has no peers.
    EXECUTE format($q$
        INSERT INTO batch.%I (period, source_type, source_id, generation, batch_id, je_offset)
        SELECT $1, f.source_type, f.source_id, f.generation, $2,
               sum(f.template_count) OVER (ORDER BY f.source_id ROWS UNBOUNDED PRECEDING)
                  - f.template_count
        FROM preflight_candidate AS f
        WHERE f.reason IS NULL
        ORDER BY f.source_id
        $q$, batch.claim_partition_name(v_range.claim_period))
    USING v_range.claim_period, v_range.batch_id;

    -- Open dead letters of rows now claimed: the commit resolves these.
    INSERT INTO batch.dead_letter_resolution (batch_id, dead_letter_id)
    SELECT v_range.batch_id, d.dead_letter_id
    FROM preflight_candidate AS f
    JOIN batch.dead_letter AS d
      ON d.source_type = f.source_type AND d.source_id = f.source_id AND d.status = 'OPEN'
     AND d.source_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
    WHERE f.reason IS NULL;

    -- In key order: ranges running at once add to the same rows and so take
    -- their locks in one order.
    INSERT INTO batch.control_total AS ct (batch_id, source_type, currency, source_rows,
                                          source_amount)
    SELECT v_range.batch_id, k.source_type, coalesce(k.currency, ''), count(*),
           coalesce(sum(k.amount), 0)
    FROM preflight_candidate AS k
    GROUP BY k.source_type, coalesce(k.currency, '')
    ORDER BY k.source_type, coalesce(k.currency, '')
    ON CONFLICT (batch_id, source_type, currency) DO UPDATE
       SET source_rows = ct.source_rows + excluded.source_rows,
           source_amount = ct.source_amount + excluded.source_amount;

    SELECT count(*), coalesce(sum(f.template_count), 0), min(f.source_id), max(f.source_id)
      INTO v_claimed, v_je_count, v_lo, v_hi
      FROM preflight_candidate AS f
     WHERE f.reason IS NULL;
    DROP TABLE preflight_candidate;

    UPDATE batch.range AS rg
       SET stage = 'PROCESS', status = 'PENDING', attempts = 0, row_count = v_claimed,
           je_count = v_je_count,
           lo_source_id = coalesce(v_lo, rg.lo_source_id),
           hi_source_id = coalesce(v_hi, rg.hi_source_id),
           worker = NULL, worker_pid = NULL, worker_backend_start = NULL, retry_after = NULL,
           preflight_started_at = coalesce(rg.started_at, v_started),
           preflight_finished_at = clock_timestamp(), started_at = NULL
     WHERE rg.range_id = p_range_id;
END
$$;
