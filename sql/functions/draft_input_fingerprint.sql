-- The fingerprint of what a draft is built from, recorded at its pre-flight
-- and recomputed when it is finalized; a draft is finalized only while the two
-- are equal. One key per kind of input, so a difference names what changed:
--   source_rows        per source type, the rows dated in the period: how many,
--                      and the sum of a 64-bit hash of each row's text (order
--                      does not matter; an added, removed or changed row moves
--                      it). One read of the period's rows, as the control
--                      totals' own.
--   late_rows          the same over the rows of closed periods the draft took
--                      (late_row_policy NEXT_OPEN_PERIOD): those it claimed or
--                      dead-lettered.
--   posting_rules, journal_templates, currencies, accounts, lines_of_business
--                      md5 over the whole table's rows (a few hundred at most,
--                      batch.relation_md5)
--   fx_rates           md5 over the rates of the period and of the late rows'
--                      periods
--   settings           the functional currency and the late-row policy
-- p_parts limits it to those keys (NULL: all). A fixed DateStyle makes a row's
-- text the same in every session.
CREATE OR REPLACE FUNCTION batch.draft_input_fingerprint(p_batch_id bigint,
                                                         p_parts text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD'
SET extra_float_digits = 1
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
                         coalesce(sum(hashtextextended(p::text, 0)), 0) AS h
                  FROM subledger.premium_transaction AS p
                  WHERE p.payment_date BETWEEN r.start_date AND r.end_date
                  UNION ALL
                  SELECT 'CLAIM', count(*), coalesce(sum(hashtextextended(c::text, 0)), 0)
                  FROM subledger.claims_transaction AS c
                  WHERE c.claim_date BETWEEN r.start_date AND r.end_date) AS x) END,
        'late_rows', CASE WHEN 'late_rows' = ANY (r.parts) THEN (
            SELECT jsonb_build_object('rows', count(*),
                                      'hash', coalesce(sum(hashtextextended(s::text, 0)), 0)::text)
            FROM subledger.source_transaction AS s
            WHERE cardinality(r.late_periods) > 0
              AND to_char(s.txn_date, 'YYYY-MM') = ANY (r.late_periods)
              AND (s.source_type, s.source_id) IN (
                  SELECT c.source_type, c.source_id FROM batch.source_claim AS c
                  WHERE c.period = ANY (r.late_periods) AND c.batch_id = r.batch_id
                  UNION
                  SELECT d.source_type, d.source_id FROM batch.dead_letter AS d
                  WHERE d.batch_id = r.batch_id)) END,
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
