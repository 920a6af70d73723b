-- Statement-level: rows that arrive dated where no OPEN period can take them
-- (a closed period, no period at all, or no date) are noted, so the next run
-- dead-letters them rather than leaving them unseen. A FUTURE period's rows
-- are not strays: they wait for it to open. One set-based pass over the
-- statement's transition table; nothing per row.
-- TG_ARGV: source type, id column, date column.
CREATE OR REPLACE FUNCTION subledger.source_note_strays()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format(
        $q$
        INSERT INTO subledger.stray_transaction (source_type, source_id)
        SELECT %L, n.%I
        FROM new_rows AS n
        WHERE NOT EXISTS (
            SELECT FROM gl.accounting_period AS ap
            WHERE ap.status IN ('OPEN', 'FUTURE')
              AND n.%I BETWEEN ap.start_date AND ap.end_date)
        ON CONFLICT DO NOTHING
        $q$,
        TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER premium_transaction_note_strays_insert
    AFTER INSERT ON subledger.premium_transaction
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION
        subledger.source_note_strays('PREMIUM', 'txn_id', 'payment_date');
CREATE OR REPLACE TRIGGER premium_transaction_note_strays_update
    AFTER UPDATE ON subledger.premium_transaction
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION
        subledger.source_note_strays('PREMIUM', 'txn_id', 'payment_date');
CREATE OR REPLACE TRIGGER claims_transaction_note_strays_insert
    AFTER INSERT ON subledger.claims_transaction
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION
        subledger.source_note_strays('CLAIM', 'claim_id', 'claim_date');
CREATE OR REPLACE TRIGGER claims_transaction_note_strays_update
    AFTER UPDATE ON subledger.claims_transaction
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION
        subledger.source_note_strays('CLAIM', 'claim_id', 'claim_date');
