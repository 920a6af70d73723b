-- One span of the ledger a period-end reads (a LEDGER range, claimed by this
-- connection; batch.preflight_range hands it here): the journal entries
-- lo..hi (je_ids) of one committed batch (ledger_batch_id, in its period's
-- month), their lines on monetary accounts (gl.account.is_monetary) in a
-- currency other than the functional one, summed per account and currency
-- into batch.fx_movement_part, in one statement. The range is then DONE, in
-- the same transaction, with the number of lines it read.
CREATE OR REPLACE PROCEDURE batch.sum_ledger_range(p_range_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Both sides are a span of one batch's partition: hash the headers of the
-- span, scan its lines.
SET enable_nestloop = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    v_range   batch.range%ROWTYPE;
    v_start   date;
    v_end     date;
    v_started timestamptz := clock_timestamp();
    v_lines   bigint;
BEGIN
    SELECT * INTO STRICT v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id;
    v_start := to_date(v_range.claim_period, 'YYYY-MM');
    v_end := (v_start + interval '1 month')::date;

    WITH summed AS (
        INSERT INTO batch.fx_movement_part (range_id, account_code, currency, debit, credit,
                                            functional_debit, functional_credit)
        SELECT p_range_id, l.account_code, h.currency, sum(l.debit), sum(l.credit),
               sum(l.functional_debit), sum(l.functional_credit)
        FROM gl.journal_entry_line AS l
        JOIN gl.journal_entry_header AS h
          ON h.je_id = l.je_id AND h.je_date = l.je_date AND h.batch_id = l.batch_id
        JOIN gl.account AS a ON a.account_code = l.account_code AND a.is_monetary
        WHERE l.batch_id = v_range.ledger_batch_id AND h.batch_id = v_range.ledger_batch_id
          AND l.je_date >= v_start AND l.je_date < v_end
          AND h.je_date >= v_start AND h.je_date < v_end
          AND l.je_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
          AND h.je_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
          AND h.currency <> (SELECT st.functional_currency FROM gl.setting AS st)
        GROUP BY l.account_code, h.currency
        RETURNING 1
    )
    SELECT count(*) INTO v_lines FROM summed;

    CALL batch.complete_period_end_range(p_range_id, v_lines, v_started,
        format('ledger range %s done: batch %s, entries %s..%s, %s account currencies',
               v_range.range_no, v_range.ledger_batch_id, v_range.lo_source_id,
               v_range.hi_source_id, v_lines));
END
$$;
