-- Phase 1 of a reversal (batch.preflight hands a REVERSAL or AUTO_REVERSAL
-- batch here). Takes a STARTED reversal. Gates, as a run's: the reversal's period is OPEN and the
-- reversed batch still COMMITTED; a failed gate marks the batch FAILED and
-- returns. Then, in one statement, every posting to reverse (the reversed
-- batch's claims, or those of the selected rows, not reversed yet) is claimed
-- for reversal in batch.source_reversal, with the number of entries it had
-- (each is mirrored by one reversing entry) and the offset of its first
-- reversing entry; control totals of those source rows are recorded. Both
-- periods' advisory locks are held, in period order, so neither a run of the
-- reversed period nor one of the reversal's period can interleave.
-- Leaves the batch PREFLIGHTED.
CREATE OR REPLACE PROCEDURE batch.preflight_reversal(p_batch_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started       timestamptz := clock_timestamp();
    v_run           batch.run%ROWTYPE;
    v_original      batch.run%ROWTYPE;
    v_period_status text;
    v_numbers_used  bigint;
    v_selected      boolean;
    v_gate_errors   text[] := '{}'::text[];
    v_claimed       bigint;
    v_je_count      bigint;
BEGIN
    SELECT * INTO v_run FROM batch.run AS r WHERE r.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist', p_batch_id USING ERRCODE = 'no_data_found';
    ELSIF v_run.kind NOT IN ('REVERSAL', 'AUTO_REVERSAL') OR v_run.status <> 'STARTED' THEN
        RAISE EXCEPTION 'batch % is a % batch, %; reversal pre-flight runs on a STARTED reversal',
                        p_batch_id, v_run.kind, v_run.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT * INTO STRICT v_original FROM batch.run AS r WHERE r.batch_id = v_run.reverses_batch_id;

    PERFORM pg_advisory_xact_lock(batch.period_lock_key(p.period))
       FROM (SELECT DISTINCT x.period
               FROM unnest(ARRAY[v_run.period, v_original.period]) AS x (period)
              ORDER BY x.period) AS p;
    SELECT ap.status, ap.je_numbers_used INTO v_period_status, v_numbers_used
      FROM gl.accounting_period AS ap WHERE ap.period = v_run.period FOR UPDATE;

    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'period_open',
                              v_period_status = 'OPEN', 'OPEN', v_period_status) THEN
        v_gate_errors := v_gate_errors || format('period %s is %s', v_run.period,
                                                 v_period_status);
    END IF;
    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'reversed_period_in_database',
                              NOT EXISTS (SELECT FROM gl.accounting_period AS ap
                                          WHERE (ap.period = v_original.period
                                                 OR ap.period = ANY (v_original.late_periods))
                                            AND ap.status IN ('ARCHIVED', 'RESTORED')),
                              'not archived', v_original.period) THEN
        v_gate_errors := v_gate_errors || format('period %s of batch %s is archived',
                                                 v_original.period, v_original.batch_id);
    END IF;
    IF NOT batch.record_check(p_batch_id, NULL, 'preflight', 'reversed_batch_committed',
                              v_original.status = 'COMMITTED'
                              AND v_original.kind IN ('RUN', 'PERIOD_END'),
                              'a COMMITTED run or period-end',
                              format('a %s batch, %s', v_original.kind, v_original.status)) THEN
        v_gate_errors := v_gate_errors || format('batch %s is a %s batch, %s',
                                                 v_original.batch_id, v_original.kind,
                                                 v_original.status);
    END IF;
    PERFORM gl.ensure_period_partitions(v_run.period);
    PERFORM batch.record_check(p_batch_id, NULL, 'preflight', 'partitions_ready', true,
                               'month partitions of the ledger and claims', 'present');

    IF cardinality(v_gate_errors) > 0 THEN
        CALL batch.refuse_preflight(p_batch_id, v_gate_errors);
        RETURN;
    END IF;

    v_selected := EXISTS (SELECT FROM batch.reversal_selection AS s
                          WHERE s.batch_id = p_batch_id);
    -- Each posting of the reversed batch with its entry count: its claims'
    -- offsets (from their range's claim_offset_base) tile the batch's entries,
    -- so the count is the gap to the next.
    WITH claim AS (
        SELECT c.period, c.source_type, c.source_id, c.generation,
               b.claim_offset_base + c.je_offset AS je_offset
        FROM batch.source_claim AS c
        -- The claim's range: the last one starting at or before it.
        CROSS JOIN LATERAL (
            SELECT rg.claim_offset_base
            FROM batch.range AS rg
            WHERE rg.batch_id = c.batch_id AND rg.claim_period = c.period
              AND rg.source_type = c.source_type AND rg.lo_source_id <= c.source_id
            ORDER BY rg.lo_source_id DESC
            LIMIT 1
        ) AS b
        WHERE c.period = ANY (v_original.period || v_original.late_periods)
          AND c.batch_id = v_original.batch_id
    ), posting AS (
        SELECT c.period, c.source_type, c.source_id, c.generation,
               v_original.je_id_base + c.je_offset AS original_je_id,
               coalesce(lead(c.je_offset) OVER (ORDER BY c.je_offset), v_original.je_count)
                   - c.je_offset AS je_count
        FROM claim AS c
    ), chosen AS (
        SELECT p.*
        FROM posting AS p
        WHERE (NOT v_selected
               OR EXISTS (SELECT FROM batch.reversal_selection AS s
                          WHERE s.batch_id = p_batch_id AND s.source_type = p.source_type
                            AND s.source_id = p.source_id))
          AND NOT EXISTS (SELECT FROM batch.source_reversal AS sr
                          WHERE sr.period = p.period AND sr.source_type = p.source_type
                            AND sr.source_id = p.source_id AND sr.generation = p.generation)
    ), claimed AS (
        INSERT INTO batch.source_reversal (period, source_type, source_id, generation,
                                           batch_id, je_offset, original_je_id, je_count)
        SELECT ch.period, ch.source_type, ch.source_id, ch.generation, p_batch_id,
               sum(ch.je_count) OVER (ORDER BY ch.source_type, ch.source_id
                                      ROWS UNBOUNDED PRECEDING) - ch.je_count,
               ch.original_je_id, ch.je_count
        FROM chosen AS ch
        ORDER BY ch.source_type, ch.source_id
        RETURNING source_type, source_id, je_count
    ), totals AS (
        INSERT INTO batch.control_total AS ct (batch_id, source_type, currency, source_rows,
                                              source_amount)
        SELECT p_batch_id, s.source_type, s.currency, count(*), sum(s.amount)
        FROM claimed AS k
        JOIN batch.entry_source AS s
          ON s.source_type = k.source_type AND s.source_id = k.source_id
        GROUP BY s.source_type, s.currency
        RETURNING source_rows
    )
    SELECT (SELECT count(*) FROM claimed), (SELECT coalesce(sum(k.je_count), 0) FROM claimed AS k)
      INTO v_claimed, v_je_count;

    IF v_claimed = 0 OR v_selected AND v_claimed <> (SELECT count(*)
                                                      FROM batch.reversal_selection AS s
                                                      WHERE s.batch_id = p_batch_id) THEN
        RAISE EXCEPTION 'reversal batch %: % of the postings it was started for are no longer reversible',
                        p_batch_id, CASE WHEN v_selected
                                         THEN (SELECT count(*) FROM batch.reversal_selection AS s
                                               WHERE s.batch_id = p_batch_id) - v_claimed
                                         ELSE 0 END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Another reversal took them meanwhile; cancel this one with "monthend cancel %s".',
                                p_batch_id);
    END IF;

    UPDATE batch.run AS r
       SET status = 'PREFLIGHTED',
           claimed_rows = v_claimed,
           dead_letter_rows = 0,
           source_rows = v_claimed,
           je_count = v_je_count,
           je_number_base = v_numbers_used
     WHERE r.batch_id = p_batch_id;
    PERFORM batch.record_phase_time(p_batch_id, 'preflight', v_started);
    PERFORM batch.log_event(p_batch_id, 'PREFLIGHT_DONE',
        format('pre-flight: %s postings of batch %s to reverse (%s entries)', v_claimed,
               v_original.batch_id, v_je_count),
        jsonb_build_object('claimed', v_claimed, 'entries', v_je_count));
    PERFORM audit.append('PREFLIGHT_RESULT', jsonb_build_object(
        'batch_id', p_batch_id, 'passed', true, 'claimed', v_claimed,
        'reverses_batch_id', v_original.batch_id));
END
$$;
