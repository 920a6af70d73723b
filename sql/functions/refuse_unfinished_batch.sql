-- The refusal of a batch that cannot start because another is unfinished:
-- the period's unfinished batch (or, given p_reverses_batch_id, one that
-- reverses that batch), named with what to do about it. Called by the
-- start_* procedures when their insert into batch.run meets the unique index
-- that allows one unfinished batch a period. Always raises.
CREATE OR REPLACE FUNCTION batch.refuse_unfinished_batch(
    p_period             text,
    p_reverses_batch_id  bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_active_batch bigint;
    v_active_state text;
BEGIN
    SELECT r.batch_id, r.status INTO v_active_batch, v_active_state
      FROM batch.run AS r
     WHERE r.status NOT IN ('COMMITTED', 'CANCELLED', 'SUPERSEDED')
       AND (r.period = p_period OR r.reverses_batch_id = p_reverses_batch_id)
     ORDER BY r.batch_id
     LIMIT 1;
    RAISE EXCEPTION 'period % already has an unfinished batch % (status %)',
                    p_period, v_active_batch, v_active_state
        USING ERRCODE = 'lock_not_available',
              HINT = batch.unfinished_batch_hint(v_active_batch);
END
$$;
