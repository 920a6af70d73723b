-- TRUNCATE bypasses row triggers; refuse it once any row has been claimed.
CREATE OR REPLACE FUNCTION subledger.source_refuse_truncate_when_claimed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM batch.source_claim AS sc WHERE sc.source_type = TG_ARGV[0]) THEN
        RAISE EXCEPTION 'subledger.% has rows claimed by batches and cannot be truncated',
                        TG_TABLE_NAME
            USING ERRCODE = 'object_in_use';
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER premium_transaction_refuse_truncate_when_claimed
    BEFORE TRUNCATE ON subledger.premium_transaction
    FOR EACH STATEMENT EXECUTE FUNCTION subledger.source_refuse_truncate_when_claimed('PREMIUM');
CREATE OR REPLACE TRIGGER claims_transaction_refuse_truncate_when_claimed
    BEFORE TRUNCATE ON subledger.claims_transaction
    FOR EACH STATEMENT EXECUTE FUNCTION subledger.source_refuse_truncate_when_claimed('CLAIM');
