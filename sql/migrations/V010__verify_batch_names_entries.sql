-- audit.verify_batch's result gained je_id and je_number. CREATE OR REPLACE
-- cannot change a result type, so a database that still has the older
-- function drops it here; audit/verify_batch.sql creates the current one.
DO $$
BEGIN
    IF to_regprocedure('audit.verify_batch(bigint)') IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_proc AS p
                       WHERE p.oid = to_regprocedure('audit.verify_batch(bigint)')
                         AND 'je_number' = ANY (p.proargnames)) THEN
        DROP FUNCTION audit.verify_batch(bigint);
    END IF;
END
$$;
