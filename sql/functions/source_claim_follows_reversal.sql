-- A source row is posted again (a claim of generation g + 1) only once its
-- posting of generation g is reversed by a COMMITTED reversal; and that
-- reversal cannot be taken back (its row deleted) once the row is posted
-- again. With the primary keys of batch.source_claim and batch.source_reversal
-- this keeps "at most one live posting" a database guarantee. The row lock
-- taken on the reversal (FOR KEY SHARE, as a foreign key takes) serializes
-- the two. Only claims of generation > 0 fire the trigger (WHEN clause), so a
-- run's first postings pay nothing for it.
CREATE OR REPLACE FUNCTION batch.source_claim_follows_reversal()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reversal_batch bigint;
    v_status         text;
BEGIN
    -- An ARCHIVED period's claims and reversals go (gl.archive_period) and
    -- come back (gl.restore_period) whole, from and to a verified archive, in
    -- one transaction: not posting by posting.
    IF EXISTS (SELECT FROM gl.accounting_period AS ap
               WHERE ap.period = CASE WHEN TG_OP = 'DELETE' THEN OLD.period ELSE NEW.period END
                 AND ap.status = 'ARCHIVED') THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_TABLE_NAME = 'source_reversal' THEN
        IF EXISTS (SELECT FROM batch.source_claim AS c
                   WHERE c.period = OLD.period AND c.source_type = OLD.source_type
                     AND c.source_id = OLD.source_id AND c.generation = OLD.generation + 1) THEN
            RAISE EXCEPTION '% transaction % was posted again after reversal batch % reversed it; the reversal cannot be removed',
                            lower(OLD.source_type), OLD.source_id, OLD.batch_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN OLD;
    END IF;
    SELECT r.batch_id, b.status INTO v_reversal_batch, v_status
      FROM batch.source_reversal AS r
      JOIN batch.run AS b ON b.batch_id = r.batch_id
     WHERE r.period = NEW.period AND r.source_type = NEW.source_type
       AND r.source_id = NEW.source_id AND r.generation = NEW.generation - 1
       FOR KEY SHARE OF r;
    IF v_status IS DISTINCT FROM 'COMMITTED' THEN
        RAISE EXCEPTION '% transaction % cannot be posted again (generation %): its posting of generation % is %',
                        lower(NEW.source_type), NEW.source_id, NEW.generation, NEW.generation - 1,
                        CASE WHEN v_reversal_batch IS NULL THEN 'not reversed'
                             ELSE format('reversed by batch %s, which is %s', v_reversal_batch,
                                         v_status) END
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER source_claim_follows_reversal
    BEFORE INSERT OR UPDATE ON batch.source_claim
    FOR EACH ROW WHEN (NEW.generation > 0)
    EXECUTE FUNCTION batch.source_claim_follows_reversal();

CREATE OR REPLACE TRIGGER source_reversal_refuse_delete_when_reposted
    BEFORE DELETE OR UPDATE ON batch.source_reversal
    FOR EACH ROW
    EXECUTE FUNCTION batch.source_claim_follows_reversal();
