-- Pre-flight of one range of a run's own period, on a worker: the range's
-- unposted source rows dated in the period (ids lo..hi of its source type) are
-- locked (FOR SHARE: an upstream change to one of them waits for this range's
-- commit, and then finds the row claimed or dead-lettered) and classified and
-- claimed by batch.classify_range, all in one transaction. Rows inserted while
-- the range runs are not locked and not taken: the next run takes them.
-- A period-end's ranges are handed on: POLICY to batch.compute_upr_range,
-- LEDGER to batch.sum_ledger_range.
-- Called by batch.process_range for a range in stage PREFLIGHT that this
-- connection claimed; the claim is given back when the range is done.
CREATE OR REPLACE PROCEDURE batch.preflight_range(p_range_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_range  batch.range%ROWTYPE;
    v_status text;
    v_start  date;
    v_end    date;
BEGIN
    SELECT * INTO STRICT v_range FROM batch.range AS rg WHERE rg.range_id = p_range_id;
    -- (batch.process_range holds the batch's row KEY SHARE.)
    SELECT r.status INTO STRICT v_status FROM batch.run AS r WHERE r.batch_id = v_range.batch_id;
    IF v_status <> 'PREFLIGHTING' THEN
        RAISE EXCEPTION 'batch % is %; ranges are pre-flighted while it is PREFLIGHTING',
                        v_range.batch_id, v_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- A period-end's ranges: the UPR of policies, or sums over the ledger.
    IF v_range.source_type IN ('POLICY', 'LEDGER') THEN
        IF v_range.source_type = 'POLICY' THEN
            CALL batch.compute_upr_range(p_range_id);
        ELSE
            CALL batch.sum_ledger_range(p_range_id);
        END IF;
        PERFORM pg_advisory_unlock(batch.lock_key('range_claim', p_range_id));
        RETURN;
    END IF;
    SELECT ap.start_date, ap.end_date INTO STRICT v_start, v_end
      FROM gl.accounting_period AS ap WHERE ap.period = v_range.claim_period;

    PERFORM 'PRAGMA:TABLE: preflight_row (source_id bigint)';
    CREATE TEMPORARY TABLE preflight_row (source_id bigint) ON COMMIT DROP;
    -- Unposted: never claimed, or every posting reversed by a committed
    -- reversal (then it is posted again, one generation on). The range's
    -- bounds on the claims too: the planner does not carry them across the
    -- join, and without them every range merged against all the period's
    -- claims (170 ms a range of 10,000 rows at 200,000 claims, 11 ms with).
    IF v_range.source_type = 'PREMIUM' THEN
        INSERT INTO preflight_row (source_id)
        SELECT p.txn_id
        FROM subledger.premium_transaction AS p
        WHERE p.txn_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
          AND p.payment_date BETWEEN v_start AND v_end
          AND NOT EXISTS (SELECT FROM batch.live_posting AS lp
                          WHERE lp.period = v_range.claim_period AND lp.source_type = 'PREMIUM'
                            AND lp.source_id = p.txn_id
                            AND lp.source_id BETWEEN v_range.lo_source_id
                                                 AND v_range.hi_source_id)
        FOR SHARE OF p;
    ELSIF v_range.source_type = 'CLAIM' THEN
        INSERT INTO preflight_row (source_id)
        SELECT c.claim_id
        FROM subledger.claims_transaction AS c
        WHERE c.claim_id BETWEEN v_range.lo_source_id AND v_range.hi_source_id
          AND c.claim_date BETWEEN v_start AND v_end
          AND NOT EXISTS (SELECT FROM batch.live_posting AS lp
                          WHERE lp.period = v_range.claim_period AND lp.source_type = 'CLAIM'
                            AND lp.source_id = c.claim_id
                            AND lp.source_id BETWEEN v_range.lo_source_id
                                                 AND v_range.hi_source_id)
        FOR SHARE OF c;
    ELSE
        RAISE EXCEPTION 'range % has source type %, which has no source table',
                        p_range_id, v_range.source_type
            USING ERRCODE = 'data_exception';
    END IF;

    CALL batch.classify_range(p_range_id);
    DROP TABLE preflight_row;
    PERFORM pg_advisory_unlock(batch.lock_key('range_claim', p_range_id));
END
$$;
