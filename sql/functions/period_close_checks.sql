-- The checks a period must pass to be closed, one row each, in the order they
-- are reported: whether it passed, what was expected and found, a detail
-- document, and what to do when it failed. gl.close_period records them and
-- refuses the close when one fails; anyone may call this to see where a
-- period stands (read only).
--   period_open             the period is OPEN
--   earlier_periods_closed  every earlier period is closed, the latest sealed
--   no_active_batch         no batch of the period, nor a reversal of one, is
--                           unfinished (status not COMMITTED or CANCELLED)
--   subledger_complete      every source row dated in the period has a live
--                           posting (claimed by a COMMITTED batch and not
--                           reversed by a COMMITTED reversal) or an open dead
--                           letter
--   period_end_posted       the period has its committed period-end batch
--                           (gl.period_end_batch), which read every committed
--                           batch of the period and of the earlier ones since
--                           its opening balances (batch.run.ledger_batches),
--                           unless
--                           gl.setting.period_end_required is false; and the
--                           previous period's revaluation is reversed
--                           (batch.auto_reversal_due)
--   ledger_balanced         the period's lines: debits = credits in each
--                           transaction currency, in functional currency per
--                           currency and in total; every line has its header
--   ledger_matches_batches  the lines are those of the period's committed
--                           batches, with the line counts and functional
--                           totals their ranges recorded as they were validated
--   dead_letters            no open dead letter of a row dated in the period,
--                           or they are carried (p_carry_dead_letters): how
--                           many and how much is recorded
-- Reads the period's lines once (gl.period_movement), its source rows once.
CREATE OR REPLACE FUNCTION gl.period_close_checks(
    p_period              text,
    p_carry_dead_letters  boolean DEFAULT false)
RETURNS TABLE (check_name text, passed boolean, expected text, actual text, detail jsonb,
               hint text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status       text;
    v_start        date;
    v_end          date;
    v_refusal      record;
    v_active       text;
    v_first_active bigint;
    v_unposted     bigint;
    v_unposted_amt jsonb;
    v_unbalanced   text;
    v_headless     bigint;
    v_totals       jsonb;
    v_mismatch     text;
    v_dead_rows    bigint;
    v_dead_amt     jsonb;
    v_period_end   bigint;
    v_stale        text;
    v_stale_period text;
BEGIN
    SELECT ap.status, ap.start_date, ap.end_date INTO v_status, v_start, v_end
      FROM gl.accounting_period AS ap WHERE ap.period = p_period;
    IF v_start IS NULL THEN
        v_start := to_date(p_period, 'YYYY-MM');
        v_end := (v_start + interval '1 month - 1 day')::date;
    END IF;

    check_name := 'period_open';
    passed := v_status IS NOT DISTINCT FROM 'OPEN';
    expected := 'OPEN';
    actual := coalesce(v_status, 'no such period');
    detail := '{}';
    hint := CASE WHEN NOT passed THEN coalesce(gl.period_posting_hint(p_period, v_status), '') END;
    RETURN NEXT;

    SELECT * INTO v_refusal FROM gl.period_transition_refusal(p_period, 'OPEN', 'CLOSED');
    check_name := 'earlier_periods_closed';
    passed := v_refusal.message IS NULL;
    expected := 'every earlier period closed, the latest with its balances';
    actual := coalesce(v_refusal.message, 'yes');
    hint := v_refusal.hint;
    RETURN NEXT;

    SELECT string_agg(format('batch %s (%s)', r.batch_id, r.status), ', ' ORDER BY r.batch_id),
           min(r.batch_id)
      INTO v_active, v_first_active
      FROM batch.run AS r
     WHERE r.status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED')
       AND (r.period = p_period
            -- a reversal (posted elsewhere) of one of the period's batches
            OR r.reverses_batch_id IN (SELECT o.batch_id FROM batch.run AS o
                                       WHERE o.period = p_period));
    check_name := 'no_active_batch';
    passed := v_active IS NULL;
    expected := 'every batch of the period COMMITTED or CANCELLED';
    actual := coalesce(v_active, 'none active');
    hint := CASE WHEN NOT passed THEN batch.unfinished_batch_hint(v_first_active) END;
    RETURN NEXT;

    SELECT u.rows, u.amounts INTO v_unposted, v_unposted_amt
      FROM gl.period_unposted_rows(p_period) AS u;
    check_name := 'subledger_complete';
    passed := v_unposted = 0;
    expected := 'every source row dated in the period posted or dead-lettered';
    actual := CASE WHEN passed THEN 'all posted or dead-lettered'
                   ELSE format('%s row(s) neither posted nor dead-lettered', v_unposted) END;
    detail := jsonb_build_object('unposted_rows', v_unposted, 'unposted_amount', v_unposted_amt);
    hint := CASE WHEN NOT passed THEN
        format('Post or dead-letter them: `monthend run --period %s`.', p_period) END;
    RETURN NEXT;

    -- The period-end entries (UPR, FX revaluation) are part of the period: its
    -- period-end batch stands and read every committed batch with entries of
    -- the period and of the earlier ones since its opening balances (it reads
    -- the ledger and the posted premium from its pre-flight to its
    -- allocation: one committed since is in none, some or all of its
    -- figures), and the previous period's revaluation is reversed on its
    -- first day.
    v_period_end := gl.period_end_batch(p_period);
    SELECT string_agg(r.batch_id::text, ', ' ORDER BY r.batch_id),
           min(r.period) FILTER (WHERE r.period < p_period)
      INTO v_stale, v_stale_period
      FROM batch.run AS r
      JOIN batch.run AS pe ON pe.batch_id = v_period_end
     WHERE r.period <= p_period AND r.batch_id <> pe.batch_id AND r.status = 'COMMITTED'
       AND r.je_count > 0
       AND (pe.opening_period IS NULL OR r.period > pe.opening_period)
       AND CASE WHEN pe.ledger_batches IS NOT NULL THEN r.batch_id <> ALL (pe.ledger_batches)
                ELSE r.finished_at > pe.started_at END;
    check_name := 'period_end_posted';
    passed := (NOT (SELECT st.period_end_required FROM gl.setting AS st)
               OR (v_period_end IS NOT NULL AND v_stale IS NULL))
              AND batch.auto_reversal_due(p_period) IS NULL;
    expected := 'a committed period-end batch that read every committed batch of the '
                'period and of the earlier open ones '
                '(gl.setting.period_end_required), the previous revaluation reversed';
    actual := CASE WHEN batch.auto_reversal_due(p_period) IS NOT NULL
                   THEN format('the revaluation of batch %s not reversed',
                               batch.auto_reversal_due(p_period))
                   WHEN v_stale IS NOT NULL
                   THEN format('batch %s, before batch(es) %s', v_period_end, v_stale)
                   ELSE coalesce('batch ' || v_period_end, 'none') END;
    detail := '{}';
    hint := CASE WHEN passed THEN NULL
                 WHEN batch.auto_reversal_due(p_period) IS NOT NULL THEN
                     format('Reverse it: `monthend run --period %s` makes the reversal first.',
                            p_period)
                 WHEN v_stale_period IS NOT NULL THEN
                     format('Reverse it (`monthend reverse %s --reason OTHER`), finish period '
                            '%s first (its batches, then `monthend period-end --period %s`), '
                            'then post it again: `monthend period-end --period %s`.',
                            v_period_end, v_stale_period, v_stale_period, p_period)
                 WHEN v_stale IS NOT NULL THEN
                     format('Reverse it (`monthend reverse %s --reason OTHER`) and post it '
                            'again: `monthend period-end --period %s`.', v_period_end, p_period)
                 ELSE format('Post them: `monthend period-end --period %s`.', p_period) END;
    RETURN NEXT;

    -- The period's lines, summed once; both ledger checks read this.
    WITH movement AS MATERIALIZED (
        SELECT * FROM gl.period_movement(p_period)
    ), per_currency AS (
        SELECT m.currency, sum(m.debit) AS debit, sum(m.credit) AS credit,
               sum(m.functional_debit) AS functional_debit,
               sum(m.functional_credit) AS functional_credit, sum(m.lines) AS lines
        FROM movement AS m WHERE m.currency IS NOT NULL GROUP BY m.currency
    ), per_batch AS (
        SELECT m.batch_id, sum(m.lines) AS lines, sum(m.functional_debit) AS functional_debit,
               sum(m.functional_credit) AS functional_credit
        FROM movement AS m GROUP BY m.batch_id
    ), recorded AS (
        SELECT r.batch_id, coalesce(r.line_count, 0) AS lines,
               coalesce((SELECT sum(rt.functional_debit) FROM batch.range AS rg
                         JOIN batch.range_total AS rt ON rt.range_id = rg.range_id
                         WHERE rg.batch_id = r.batch_id), 0) AS functional_debit,
               coalesce((SELECT sum(rt.functional_credit) FROM batch.range AS rg
                         JOIN batch.range_total AS rt ON rt.range_id = rg.range_id
                         WHERE rg.batch_id = r.batch_id), 0) AS functional_credit
        FROM batch.run AS r WHERE r.period = p_period AND r.status = 'COMMITTED'
    )
    SELECT (SELECT string_agg(format('%s: debits %s, credits %s; functional debits %s, '
                                     'credits %s', c.currency, c.debit, c.credit,
                                     c.functional_debit, c.functional_credit), '; '
                              ORDER BY c.currency)
              FROM per_currency AS c
             WHERE c.debit <> c.credit OR c.functional_debit <> c.functional_credit),
           (SELECT coalesce(sum(m.lines), 0) FROM movement AS m WHERE m.currency IS NULL),
           (SELECT coalesce(jsonb_object_agg(c.currency, jsonb_build_object(
                       'lines', c.lines, 'debit', c.debit::text, 'credit', c.credit::text,
                       'functional_debit', c.functional_debit::text,
                       'functional_credit', c.functional_credit::text)), '{}')
              FROM per_currency AS c),
           (SELECT string_agg(CASE WHEN x.batch_id IS NULL
                                   THEN format('batch %s has lines but is not a committed '
                                               'batch of the period', b.batch_id)
                                   ELSE format('batch %s: ledger %s lines, functional %s / %s; '
                                               'recorded %s lines, %s / %s', x.batch_id,
                                               coalesce(b.lines, 0),
                                               coalesce(b.functional_debit, 0),
                                               coalesce(b.functional_credit, 0), x.lines,
                                               x.functional_debit, x.functional_credit) END,
                              '; ' ORDER BY coalesce(x.batch_id, b.batch_id))
              FROM recorded AS x
              FULL JOIN per_batch AS b ON b.batch_id = x.batch_id
             WHERE x.batch_id IS NULL
                OR coalesce(b.lines, 0) <> x.lines
                OR coalesce(b.functional_debit, 0) <> x.functional_debit
                OR coalesce(b.functional_credit, 0) <> x.functional_credit)
      INTO v_unbalanced, v_headless, v_totals, v_mismatch;

    check_name := 'ledger_balanced';
    passed := v_unbalanced IS NULL AND v_headless = 0
              AND (SELECT coalesce(sum((t.value ->> 'functional_debit')::numeric), 0)
                          = coalesce(sum((t.value ->> 'functional_credit')::numeric), 0)
                     FROM jsonb_each(v_totals) AS t);
    expected := 'debits = credits per currency, in functional currency per currency and in '
                'total; every line with its header';
    actual := CASE WHEN passed THEN 'balanced'
                   ELSE concat_ws('; ', v_unbalanced,
                                  CASE WHEN v_headless > 0
                                       THEN format('%s line(s) without a header', v_headless) END,
                                  CASE WHEN v_unbalanced IS NULL AND v_headless = 0
                                       THEN 'functional total debits <> credits' END) END;
    detail := jsonb_build_object('per_currency', v_totals);
    hint := CASE WHEN NOT passed THEN
        'The ledger does not balance: nothing the run writes does that. Run `monthend verify` '
        'and `monthend report trial-balance --period ' || p_period || '` and escalate.' END;
    RETURN NEXT;

    check_name := 'ledger_matches_batches';
    passed := v_mismatch IS NULL;
    expected := 'ledger lines = what the committed batches of the period recorded';
    actual := coalesce(v_mismatch, 'all match');
    detail := '{}';
    hint := CASE WHEN NOT passed THEN
        'The ledger is not what the runs validated. Run `monthend verify` and escalate.' END;
    RETURN NEXT;

    SELECT coalesce(sum(a.n), 0), coalesce(jsonb_object_agg(a.currency, a.amount::text), '{}')
      INTO v_dead_rows, v_dead_amt
      FROM (SELECT coalesce(d.currency, '?') AS currency, coalesce(sum(d.amount), 0) AS amount,
                   count(*) AS n
            FROM batch.period_dead_letter AS d WHERE d.period = p_period
            GROUP BY coalesce(d.currency, '?')) AS a;
    check_name := 'dead_letters';
    passed := v_dead_rows = 0 OR p_carry_dead_letters;
    expected := CASE WHEN p_carry_dead_letters THEN 'open dead letters carried'
                     ELSE 'no open dead letter dated in the period' END;
    actual := CASE WHEN v_dead_rows = 0 THEN 'none'
                   ELSE format('%s open, amounts %s%s', v_dead_rows,
                               (SELECT string_agg(format('%s %s', t.key, t.value #>> '{}'), ', '
                                                  ORDER BY t.key)
                                  FROM jsonb_each(v_dead_amt) AS t),
                               CASE WHEN p_carry_dead_letters THEN ', carried' ELSE '' END) END;
    detail := jsonb_build_object('rows', v_dead_rows, 'amount', v_dead_amt,
                                 'carried', p_carry_dead_letters AND v_dead_rows > 0);
    hint := CASE WHEN NOT passed THEN
        format('Fix their causes and run the period again (`monthend dlq list`, `monthend run '
               '--period %s`), or close with them carried: `monthend period close %s '
               '--carry-dead-letters`.', p_period, p_period) END;
    RETURN NEXT;
END
$$;

GRANT EXECUTE ON FUNCTION gl.period_close_checks(text, boolean)
    TO monthend_runner, monthend_auditor;
