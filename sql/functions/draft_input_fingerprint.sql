-- The fingerprint of what a draft is built from, recorded at its pre-flight
-- and recomputed when it is finalized; a draft is finalized only while the two
-- are equal. One key per kind of input, so a difference names what changed:
--   source_rows        per source type, the rows dated in the period: how many,
--                      and the sum of a 64-bit hash of each row
--                      (hash_record_extended: every column hashed by its type's
--                      own hash function, no text conversion; order does not
--                      matter; an added, removed or changed row moves it). One
--                      read of the period's rows, 2-3 times the cost of their
--                      count and sum (500k rows: 0.48-0.74 s against
--                      0.22-0.28 s, side by side; hashing each row's text
--                      instead was 1.3-1.8 times slower still).
--   late_rows          the same over the rows of closed periods the draft took
--                      (late_row_policy NEXT_OPEN_PERIOD): those it claimed or
--                      dead-lettered. Read through its ranges, so recorded at
--                      the end of allocation.
--   posting_rules, journal_templates, currencies, accounts, lines_of_business
--                      md5 over the whole table's rows (a few hundred at most,
--                      batch.relation_md5)
--   fx_rates           md5 over the rates of the period and of the late rows'
--                      periods
--   settings           the functional currency and the late-row policy
-- p_parts limits it to those keys (NULL: all).
CREATE OR REPLACE FUNCTION batch.draft_input_fingerprint(p_batch_id bigint,
                                                         p_parts text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
-- Planned once with its parameters unknown, the branches it does not take
-- count in the estimate: past jit_above_cost, JIT compiled for 0.5 s a call
-- that runs in a few milliseconds (measured).
SET jit = off
AS $$
    WITH r AS (
        SELECT r.batch_id, r.period, r.late_periods, ap.start_date, ap.end_date,
               coalesce(p_parts, ARRAY['source_rows', 'late_rows', 'posting_rules',
                                       'journal_templates', 'currencies', 'accounts',
                                       'lines_of_business', 'fx_rates', 'settings']) AS parts
        FROM batch.run AS r
        JOIN gl.accounting_period AS ap ON ap.period = r.period
        WHERE r.batch_id = p_batch_id
    )
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'source_rows', CASE WHEN 'source_rows' = ANY (r.parts) THEN (
            SELECT jsonb_object_agg(x.source_type,
                                    jsonb_build_object('rows', x.n, 'hash', x.h::text))
            FROM (SELECT 'PREMIUM' AS source_type, count(*) AS n,
                         coalesce(sum(hash_record_extended(p, 0)), 0) AS h
                  FROM subledger.premium_transaction AS p
                  WHERE p.payment_date BETWEEN r.start_date AND r.end_date
                  UNION ALL
                  SELECT 'CLAIM', count(*), coalesce(sum(hash_record_extended(c, 0)), 0)
                  FROM subledger.claims_transaction AS c
                  WHERE c.claim_date BETWEEN r.start_date AND r.end_date) AS x) END,
        -- The late rows it claimed (found through its ranges of late claims:
        -- batch.source_claim has no index on batch_id) or dead-lettered.
        'late_rows', CASE WHEN 'late_rows' = ANY (r.parts) THEN
            CASE WHEN cardinality(r.late_periods) = 0
                 THEN jsonb_build_object('rows', 0, 'hash', '0')
                 ELSE (SELECT jsonb_build_object('rows', count(*), 'hash',
                                                 coalesce(sum(hash_record_extended(s, 0)), 0)::text)
                       FROM (SELECT c.source_type, c.source_id
                             FROM batch.range AS rg
                             JOIN batch.source_claim AS c
                               ON c.period = rg.claim_period AND c.source_type = rg.source_type
                              AND c.source_id BETWEEN rg.lo_source_id AND rg.hi_source_id
                              AND c.batch_id = rg.batch_id
                             WHERE rg.batch_id = r.batch_id AND rg.claim_period <> r.period
                             UNION
                             SELECT d.source_type, d.source_id FROM batch.dead_letter AS d
                             WHERE d.batch_id = r.batch_id) AS k
                       JOIN subledger.source_transaction AS s
                         ON s.source_type = k.source_type AND s.source_id = k.source_id
                       WHERE to_char(s.txn_date, 'YYYY-MM') = ANY (r.late_periods)) END END,
        'posting_rules', CASE WHEN 'posting_rules' = ANY (r.parts)
                        THEN batch.relation_md5('gl.posting_rule') END,
        'journal_templates', CASE WHEN 'journal_templates' = ANY (r.parts)
                            THEN batch.relation_md5('gl.journal_template') END,
        'currencies', CASE WHEN 'currencies' = ANY (r.parts)
                     THEN batch.relation_md5('gl.currency') END,
        'accounts', CASE WHEN 'accounts' = ANY (r.parts)
                   THEN batch.relation_md5('gl.account') END,
        'lines_of_business', CASE WHEN 'lines_of_business' = ANY (r.parts)
                            THEN batch.relation_md5('gl.line_of_business') END,
        'fx_rates', CASE WHEN 'fx_rates' = ANY (r.parts) THEN (
            SELECT md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), ''))
            FROM gl.fx_rate AS t
            WHERE t.period = ANY (r.period || r.late_periods)) END,
        'settings', CASE WHEN 'settings' = ANY (r.parts) THEN (
            SELECT md5(concat_ws('|', st.functional_currency, st.late_row_policy))
            FROM gl.setting AS st) END))
    FROM r
$$;
