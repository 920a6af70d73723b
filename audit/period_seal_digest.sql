-- The seal of a closed period, computed from what is stored now: sha256 over
--   'P|<period>|<previous period>|<previous seal, hex>'   (the chain of closes)
--   'S|<order>|<batch_id>|<batch digest, hex>'  per batch in commit order
--                                               (gl.period_seal_batch)
--   audit.canonical_balance_text of each balance row, by account code
--   (bytewise) and currency                     (gl.period_balance)
-- one line each, joined by newlines. gl.close_period stores it in
-- gl.accounting_period.seal_digest and in the PERIOD_CLOSED event;
-- audit.verify_period recomputes it.
CREATE OR REPLACE FUNCTION audit.period_seal_digest(p_period text)
RETURNS bytea
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(convert_to(concat_ws(E'\n',
        (SELECT concat_ws('|', 'P', p_period, prev.period, encode(prev.seal_digest, 'hex'))
           FROM (SELECT NULL) AS one
           LEFT JOIN LATERAL (SELECT ap.period, ap.seal_digest FROM gl.accounting_period AS ap
                               WHERE ap.period < p_period
                               ORDER BY ap.period DESC LIMIT 1) AS prev ON true),
        (SELECT string_agg(concat_ws('|', 'S', s.seal_order, s.batch_id,
                                     encode(s.digest, 'hex')), E'\n' ORDER BY s.seal_order)
           FROM gl.period_seal_batch AS s WHERE s.period = p_period),
        (SELECT string_agg(audit.canonical_balance_text(
                               b.period, b.account_code, b.currency, b.lines, b.opening,
                               b.debit, b.credit, b.closing, b.functional_opening,
                               b.functional_debit, b.functional_credit, b.functional_closing),
                           E'\n' ORDER BY b.account_code COLLATE "C", b.currency COLLATE "C")
           FROM gl.period_balance AS b WHERE b.period = p_period)), 'UTF8'))
$$;

GRANT EXECUTE ON FUNCTION audit.period_seal_digest(text) TO monthend_runner, monthend_auditor;
