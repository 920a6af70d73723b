-- A source row with a live posting (claimed by a batch being posted or
-- posted, and not reversed by a committed reversal) is frozen: its period
-- cannot change under its claim, which is what lets batch.source_claim's
-- keys guarantee at most one live posting. Upstream fixes unposted rows
-- freely, a reversed row included (correct it, or remove a duplicate). The shared advisory lock on the row's period waits for a
-- running pre-flight of that period, so a row cannot change between being
-- classified and being claimed.
-- TG_ARGV: source type, id column, date column.
CREATE OR REPLACE FUNCTION subledger.source_refuse_change_when_claimed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old      jsonb := to_jsonb(OLD);
    v_id       bigint := (v_old ->> TG_ARGV[1])::bigint;
    v_date     date := (v_old ->> TG_ARGV[2])::date;
    v_period   text := to_char(v_date, 'YYYY-MM');
    v_batch_id bigint;
    v_archived text;
BEGIN
    IF v_date IS NULL THEN
        RETURN coalesce(NEW, OLD);
    END IF;
    PERFORM pg_advisory_xact_lock_shared(batch.period_lock_key(v_period));
    -- An archived period's claims are in its archive: its rows stay as they
    -- were posted, and no row is moved into it.
    SELECT ap.period INTO v_archived
      FROM gl.accounting_period AS ap
     WHERE ap.status IN ('ARCHIVED', 'RESTORED')
       AND ap.period IN (v_period, to_char((to_jsonb(NEW) ->> TG_ARGV[2])::date, 'YYYY-MM'));
    IF FOUND THEN
        RAISE EXCEPTION '% transaction % is of period %, which is archived: it cannot be changed, '
                        'deleted or moved there', lower(TG_ARGV[0]), v_id, v_archived
            USING ERRCODE = 'object_in_use',
                  HINT = 'An archived period is kept as it was; correct the matter in an open '
                         'period.';
    END IF;
    -- Its live posting, if any: a claim not reversed by a committed reversal.
    -- A draft's claim of a row of its own period is not a posting until the
    -- draft is finalized: the row may change, and the draft's fingerprint then
    -- refuses the finalize. Late rows a draft holds stay frozen.
    SELECT lp.batch_id INTO v_batch_id
      FROM batch.live_posting AS lp
     WHERE lp.period = v_period AND lp.source_type = TG_ARGV[0] AND lp.source_id = v_id
       AND NOT EXISTS (SELECT FROM batch.run AS d
                       WHERE d.batch_id = lp.batch_id AND d.mode = 'DRAFT'
                         AND d.status <> 'COMMITTED' AND d.period = lp.period);
    IF FOUND THEN
        RAISE EXCEPTION '% transaction % is claimed by batch % and cannot be changed or deleted',
                        lower(TG_ARGV[0]), v_id, v_batch_id
            USING ERRCODE = 'object_in_use',
                  HINT = format('Reverse its posting first ("monthend reverse %s --source-ids FILE"); then the row may be corrected or removed.',
                                v_batch_id);
    END IF;
    RETURN coalesce(NEW, OLD);
END
$$;

CREATE OR REPLACE TRIGGER premium_transaction_refuse_change_when_claimed
    BEFORE UPDATE OR DELETE ON subledger.premium_transaction
    FOR EACH ROW EXECUTE FUNCTION
        subledger.source_refuse_change_when_claimed('PREMIUM', 'txn_id', 'payment_date');
CREATE OR REPLACE TRIGGER claims_transaction_refuse_change_when_claimed
    BEFORE UPDATE OR DELETE ON subledger.claims_transaction
    FOR EACH ROW EXECUTE FUNCTION
        subledger.source_refuse_change_when_claimed('CLAIM', 'claim_id', 'claim_date');
