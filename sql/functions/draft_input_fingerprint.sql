-- The fingerprint of what a draft is built from, recorded at its pre-flight
-- before it reads anything, and recomputed when it is finalized; a draft is
-- finalized only while the two are equal. Late rows of closed periods a draft
-- claims are not in it: unlike its own period's rows, they stay frozen while
-- the draft holds them (subledger.source_refuse_change_when_claimed), and
-- batch.finalize_draft checks their periods are still closed. One key per
-- kind of input, so a difference names what changed:
--   source_rows        per source type, the rows dated in the period: how many,
--                      and the sum of a 64-bit hash of each row
--                      (hash_record_extended: every column hashed by its type's
--                      own hash function, no text conversion; order does not
--                      matter; an added, removed or changed row moves it). One
--                      read of the period's rows, 2-3 times the cost of their
--                      count and sum (500k rows: 0.48-0.74 s against
--                      0.22-0.28 s, side by side; hashing each row's text
--                      instead was 1.3-1.8 times slower still).
--   posting_rules, journal_templates, currencies, accounts, lines_of_business
--                      md5 over the whole table's rows (a few hundred at most,
--                      batch.relation_md5)
--   fx_rates           md5 over every rate of every period (a few hundred rows:
--                      the late rows' periods' are known only once it reads)
--   settings           the functional currency and the late-row policy
--   policies           the policies the period's premium rows name (a premium row
--                      is judged against its policy; a period-end's: those in
--                      force at the period's end), counted and hashed like the
--                      source rows: upstream adding other policies changes nothing
--   ledger_batches, fx_closing_rates, period_end_accounts
--                      a period-end's: the committed batches of its period and
--                      the earlier ones (the balances it revalues, the written
--                      premium of its UPR), the closing rates, its accounts
CREATE OR REPLACE FUNCTION batch.draft_input_fingerprint(p_batch_id bigint)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
-- Planned with its argument unknown, the estimate of the source rows' scans
-- passes jit_above_cost: JIT compiled for 0.5 s a call whose reference part
-- runs in a few milliseconds (measured).
SET jit = off
AS $$
    SELECT jsonb_build_object(
        'source_rows', (
            SELECT jsonb_object_agg(x.source_type,
                                    jsonb_build_object('rows', x.n, 'hash', x.h::text))
            FROM (SELECT 'PREMIUM' AS source_type, count(*) AS n,
                         coalesce(sum(hash_record_extended(p, 0)), 0) AS h
                  FROM subledger.premium_transaction AS p
                  WHERE p.payment_date BETWEEN ap.start_date AND ap.end_date
                  UNION ALL
                  SELECT 'CLAIM', count(*), coalesce(sum(hash_record_extended(c, 0)), 0)
                  FROM subledger.claims_transaction AS c
                  WHERE c.claim_date BETWEEN ap.start_date AND ap.end_date) AS x),
        'posting_rules', batch.relation_md5('gl.posting_rule'),
        'journal_templates', batch.relation_md5('gl.journal_template'),
        'currencies', batch.relation_md5('gl.currency'),
        'accounts', batch.relation_md5('gl.account'),
        'lines_of_business', batch.relation_md5('gl.line_of_business'),
        'fx_rates', batch.relation_md5('gl.fx_rate'),
        'settings', (SELECT md5(concat_ws('|', st.functional_currency, st.late_row_policy))
                     FROM gl.setting AS st),
        'policies', (SELECT jsonb_build_object('rows', count(*),
                                               'hash', coalesce(sum(hash_record_extended(p, 0)),
                                                                0)::text)
                     FROM subledger.policy AS p
                     WHERE CASE WHEN r.kind = 'PERIOD_END'
                                THEN p.inception_date <= ap.end_date
                                     AND p.expiry_date > ap.end_date
                                ELSE p.policy_id IN (
                                         SELECT pt.policy_id
                                         FROM subledger.premium_transaction AS pt
                                         WHERE pt.payment_date BETWEEN ap.start_date
                                                                   AND ap.end_date) END))
        -- A period-end is built from the ledger and its closing rates too.
        || CASE WHEN r.kind = 'PERIOD_END' THEN jsonb_build_object(
               'ledger_batches', (SELECT coalesce(jsonb_agg(b.batch_id ORDER BY b.batch_id), '[]')
                                  FROM batch.run AS b
                                  WHERE b.status = 'COMMITTED' AND b.period <= r.period),
               'fx_closing_rates', batch.relation_md5('gl.fx_closing_rate'),
               'period_end_accounts', batch.relation_md5('gl.period_end_account'))
           ELSE '{}'::jsonb END
    FROM batch.run AS r
    JOIN gl.accounting_period AS ap ON ap.period = r.period
    WHERE r.batch_id = p_batch_id
$$;
