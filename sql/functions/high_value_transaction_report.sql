-- High-value transactions of one period: the large-transaction report at the
-- higher threshold (default 50,000 in functional currency), same columns and
-- same proof of what became of each row (a draft's too, with p_batch_id). See
-- gl.large_transaction_report.
CREATE OR REPLACE FUNCTION gl.high_value_transaction_report(
    p_period    text,
    p_threshold numeric DEFAULT 50000,
    p_batch_id  bigint DEFAULT NULL)
RETURNS TABLE (
    source_type         text,
    source_id           bigint,
    policy_id           bigint,
    txn_date            date,
    txn_type            text,
    line_of_business    text,
    amount              numeric,
    currency            char(3),
    fx_rate             numeric,
    functional_amount   numeric,
    functional_currency char(3),
    status              text,
    batch_id            bigint,
    first_je_number     text,
    last_je_number      text,
    entries             integer,
    dead_letter_reason  text,
    dead_letter_detail  text)
LANGUAGE sql
STABLE PARALLEL SAFE
AS $$
    SELECT * FROM gl.large_transaction_report(p_period, p_threshold, p_batch_id) AS t
    ORDER BY t.txn_date, t.source_type, t.source_id
$$;

GRANT EXECUTE ON FUNCTION gl.high_value_transaction_report(text, numeric, bigint)
    TO monthend_runner, monthend_auditor;
