-- The driver's every query, by name. Each is one call of a stored procedure or
-- function, or one read of the control tables; the driver builds no SQL.

-- name: start_run
-- Open a batch for a period; returns its batch_id.
CALL batch.start_run(%(period)s, %(workers)s, %(range_size)s, %(max_attempts)s, NULL, %(mode)s);

-- name: start_reversal
-- Open a reversal batch of a committed run (all its rows, or those given); returns its batch_id.
CALL batch.start_reversal(%(reverses_batch_id)s, %(reason)s, %(note)s, %(method)s, %(period)s, %(source_types)s, %(source_ids)s, %(workers)s, %(range_size)s, %(max_attempts)s, NULL);

-- name: start_period_end
-- Open a period-end batch (UPR and FX revaluation) for a period; returns its batch_id.
CALL batch.start_period_end(%(period)s, %(workers)s, %(range_size)s, %(max_attempts)s, %(mode)s, NULL);

-- name: start_auto_reversal
-- Open the automatic reversal of the previous period's FX revaluation, if one
-- is due; returns its batch_id or NULL.
CALL batch.start_auto_reversal(%(period)s, %(workers)s, %(range_size)s, %(max_attempts)s, NULL);

-- name: preflight
-- Phase 1: gates, dead letters, claims.
CALL batch.preflight(%(batch_id)s);

-- name: allocate_ranges
-- Phase 2 (a run's end of pre-flight): ranges placed, je_id and je_number
-- blocks, staging tables.
CALL batch.allocate_ranges(%(batch_id)s);

-- name: claim_range
-- Claim the next range of a batch; returns range_id, attempt, ranges not done.
CALL batch.claim_range(%(batch_id)s, %(worker)s, NULL, NULL, NULL);

-- name: process_range
-- One claimed range: pre-flight's (classify and claim) or processing's
-- (phases 4 and 5).
CALL batch.process_range(%(range_id)s);

-- name: record_range_failure
-- A range attempt failed: back off and retry, or fail the batch.
CALL batch.record_range_failure(%(range_id)s, %(attempt)s, %(error)s);

-- name: plan_validation_pieces
-- Phase 6, its heavy half planned: the staging tables' pieces (indexes, counts).
CALL batch.plan_validation_pieces(%(batch_id)s);

-- name: validation_pieces_left
-- The pieces still to do, in the order to hand them out (longest first).
SELECT sp.piece_no
FROM batch.validation_piece AS sp
WHERE sp.batch_id = %(batch_id)s AND sp.finished_at IS NULL
ORDER BY sp.piece_no;

-- name: run_validation_piece
-- Phase 6, one piece: an index built and its table analyzed, or rows counted.
CALL batch.run_validation_piece(%(batch_id)s, %(piece_no)s);

-- name: validate_batch
-- Phase 6: pre-commit validation.
CALL batch.validate_batch(%(batch_id)s);

-- name: commit_batch
-- Phase 7: attach and seal.
CALL batch.commit_batch(%(batch_id)s);

-- name: post_process
-- Phase 8: statistics and KPIs.
CALL batch.post_process(%(batch_id)s);

-- name: fail_batch
-- Mark a batch FAILED with a reason.
CALL batch.fail_batch(%(batch_id)s, %(error)s);

-- name: finalize_draft
-- Commit a draft whose inputs are unchanged (refused, naming what changed, otherwise).
CALL batch.finalize_draft(%(batch_id)s);

-- name: discard_draft
-- Remove a draft and everything it holds.
CALL batch.discard_draft(%(batch_id)s);

-- name: cancel_batch
-- Abandon an unfinished batch, leaving nothing behind.
CALL batch.cancel_batch(%(batch_id)s);

-- name: reopen_batch
-- Put a FAILED batch back where it was, for resume.
CALL batch.reopen_batch(%(batch_id)s);

-- name: demo_tools_installed
-- Whether the synthetic-data generator (migrate --with-demo-data-tools) is in this database.
SELECT to_regprocedure('subledger.generate_transactions(text,bigint,numeric,bigint,bigint,bigint,bigint,bigint)') IS NOT NULL AS installed;

-- name: generate_transactions
-- Synthetic source data for a period.
CALL subledger.generate_transactions(%(period)s, %(txns)s, %(bad_fraction)s, %(seed)s,
                                     NULL, NULL, NULL, NULL);

-- name: run_status
-- One batch's control row.
SELECT * FROM batch.run_summary WHERE batch_id = %(batch_id)s;

-- name: latest_batch
-- The most recent batch, optionally of one period.
SELECT batch_id FROM batch.run
WHERE %(period)s::text IS NULL OR period = %(period)s
ORDER BY batch_id DESC LIMIT 1;

-- name: range_progress
-- Ranges done and rows processed so far, for the progress bar.
SELECT count(*) FILTER (WHERE status = 'DONE') AS ranges_done,
       count(*) AS ranges,
       coalesce(sum(row_count) FILTER (WHERE status = 'DONE'), 0) AS rows_done,
       coalesce(sum(row_count), 0) AS rows_total,
       count(*) FILTER (WHERE status = 'RUNNING') AS ranges_running,
       count(*) FILTER (WHERE status = 'FAILED') AS ranges_failed,
       coalesce(sum(attempts - 1) FILTER (WHERE attempts > 1), 0) AS retries
FROM batch.range WHERE batch_id = %(batch_id)s;

-- name: dead_letter_list
-- Open dead letters, newest judgement per source row, optionally of one batch.
SELECT * FROM batch.dead_letter_current
WHERE %(batch_id)s::bigint IS NULL OR batch_id = %(batch_id)s
ORDER BY source_type, source_id
LIMIT %(limit)s;

-- name: dead_letter_summary
-- Open dead letters counted by reason.
SELECT reason_code, count(*) AS rows, sum(amount) AS amount
FROM batch.dead_letter_current
WHERE %(batch_id)s::bigint IS NULL OR batch_id = %(batch_id)s
GROUP BY reason_code ORDER BY reason_code;

-- name: validation_results
-- Every check of a batch, failures first.
SELECT phase, check_name, status, expected, actual, range_id
FROM batch.validation_result WHERE batch_id = %(batch_id)s AND range_id IS NULL
ORDER BY validation_id;

-- name: verify_chain
-- Every problem in the audit chain after row after_seq (0: the whole chain;
-- none: all is well).
SELECT * FROM audit.verify_chain(%(after_seq)s);

-- name: verify_batch
-- Every problem with one batch's seal (none: all is well).
SELECT * FROM audit.verify_batch(%(batch_id)s);

-- name: audit_head
-- The chain head to keep outside the database.
SELECT * FROM audit.head();

-- name: committed_batches
-- Every committed batch, for verifying them all, the largest first (so
-- parallel jobs end together).
-- Batches of an archived period are verified from their archive.
SELECT r.batch_id FROM batch.run AS r
JOIN gl.accounting_period AS ap ON ap.period = r.period
WHERE r.status = 'COMMITTED' AND ap.status <> 'ARCHIVED'
ORDER BY coalesce(r.line_count, 0) DESC, r.batch_id;

-- name: batches_sealed_since
-- The batches to verify incrementally: those the chain sealed after row
-- after_seq, and any committed batch the chain never sealed at all (audit
-- .verify_batch says so), the largest first.
SELECT r.batch_id
FROM batch.run AS r
JOIN gl.accounting_period AS ap ON ap.period = r.period
WHERE r.status = 'COMMITTED' AND ap.status <> 'ARCHIVED'
  AND (EXISTS (SELECT FROM audit.log AS l
               WHERE l.batch_id = r.batch_id AND l.event = 'BATCH_COMMITTED'
                 AND l.seq > %(after_seq)s)
       OR NOT EXISTS (SELECT FROM audit.log AS l
                      WHERE l.batch_id = r.batch_id AND l.event = 'BATCH_COMMITTED'))
ORDER BY coalesce(r.line_count, 0) DESC, r.batch_id;

-- name: periods_sealed_since
-- The closed periods whose seal the chain recorded after row after_seq.
SELECT DISTINCT l.payload ->> 'period' AS period
FROM audit.log AS l
JOIN gl.accounting_period AS ap ON ap.period = l.payload ->> 'period'
WHERE l.seq > %(after_seq)s AND l.event = 'PERIOD_CLOSED' AND ap.status <> 'ARCHIVED'
ORDER BY 1;

-- name: archived_periods
-- The periods let go to an archive, where, and with which manifest; with
-- after_seq, only those archived after that chain row (NULL: all).
SELECT ap.period::text AS period, ap.status_detail ->> 'location' AS location,
       ap.status_detail ->> 'manifest_sha256' AS manifest_sha256,
       (ap.status_detail ->> 'batches')::integer AS batches
FROM gl.accounting_period AS ap
WHERE ap.status = 'ARCHIVED'
  AND (%(after_seq)s::bigint IS NULL
       OR EXISTS (SELECT FROM audit.log AS l
                  WHERE l.seq > %(after_seq)s AND l.event = 'PERIOD_ARCHIVED'
                    AND l.payload ->> 'period' = ap.period))
ORDER BY ap.period;

-- name: chain_rows
-- The chain's rows from_seq..to_seq as stored, for checking them outside the
-- database (monthend verify --from-head --to-head).
SELECT seq, at, event, batch_id, actor, payload::text AS payload, encode(prev_hash, 'hex')
       AS prev_hash, encode(hash, 'hex') AS hash
FROM audit.log
WHERE seq BETWEEN %(from_seq)s AND %(to_seq)s
ORDER BY seq;

-- name: sealed_periods
-- Every closed period whose entries are in the database (closed, permanently
-- closed or restored), for verifying their seals.
SELECT period FROM gl.accounting_period
WHERE status IN ('CLOSED', 'PERMANENTLY_CLOSED', 'RESTORED') ORDER BY period;

-- name: verify_period
-- A closed period's seal and balances against the chain and the ledger.
SELECT * FROM audit.verify_period(%(period)s);

-- Observability (monthend watch, metrics, health; alerts in the run's monitor):
-- reads of the views and functions in sql/views/.

-- name: dashboard
-- Everything the dashboard shows about a batch, one JSON document.
SELECT batch.dashboard(%(batch_id)s) AS dashboard;

-- name: evaluate_alerts
-- Judge a batch's alerts; records each change of state once as an event.
SELECT batch.evaluate_alerts(%(batch_id)s) AS recorded;

-- name: batch_kpi
-- A batch's KPIs: recorded at post-processing, else as they are now.
SELECT kpi, recorded_at FROM batch.kpi_report WHERE batch_id = %(batch_id)s;

-- name: batch_metrics
-- A batch's live measures.
SELECT * FROM batch.batch_metrics WHERE batch_id = %(batch_id)s;

-- name: alert_evaluation
-- A batch's alerts judged now (severity NULL: fine or not applicable).
SELECT alert, severity, value, unit, warning, critical, applicable
FROM batch.alert_evaluation WHERE batch_id = %(batch_id)s ORDER BY alert;

-- name: alert_thresholds
-- The configured alert thresholds.
SELECT alert, metric, direction, warning, critical, unit, after_warmup, enabled, action
FROM batch.alert_threshold ORDER BY alert;

-- name: database_stats
-- Connections and cache hit ratio of the database, for the metrics exporter.
SELECT (SELECT count(*) FROM pg_stat_activity
        WHERE backend_type = 'client backend') AS connections,
       (SELECT count(*) FROM pg_stat_activity
        WHERE backend_type = 'client backend'
          AND application_name LIKE 'monthend%%') AS monthend_connections,
       current_setting('max_connections')::integer AS max_connections,
       (SELECT count(*) FROM batch.health_lock_waits) AS lock_waiters,
       (SELECT round(blks_hit::numeric / nullif(blks_hit + blks_read, 0), 4)
        FROM pg_stat_database WHERE datname = current_database()) AS cache_hit_ratio;

-- name: health_score
-- The health score, its worst status and the reasons.
SELECT score, status, reasons FROM batch.health_score;

-- name: health_checks
-- Every health check with its penalty.
SELECT check_name, status, penalty, value, detail, action FROM batch.health_check;

-- name: health_connections
-- Client connections by database, user, application and state.
SELECT * FROM batch.health_connections;

-- name: health_cache
-- Buffer cache hit ratios.
SELECT * FROM batch.health_cache;

-- name: health_lock_waits
-- Sessions waiting for locks and their blocking chains.
SELECT * FROM batch.health_lock_waits;

-- name: health_slow_statements
-- The statements with the most execution time, or a note.
SELECT * FROM batch.health_slow_statements LIMIT %(limit)s;

-- name: health_bloat
-- The relations with the most estimated bloat.
SELECT * FROM batch.health_bloat WHERE estimated_bloat_bytes > 0 LIMIT %(limit)s;

-- Compliance reports (monthend report): each one call of a report function in
-- sql/views/, run in one read-only REPEATABLE READ transaction.

-- name: report_batch
-- The batch a report or a diff is asked for: its period, kind, mode and status.
SELECT batch_id, period, kind, mode, status FROM batch.run WHERE batch_id = %(batch_id)s;

-- name: accounting_diff
-- Two accounting results per account and currency, largest functional change first.
SELECT * FROM batch.accounting_diff(%(batch_id)s, %(against_batch_id)s, %(against_period)s);

-- name: report_period
-- The period a report is asked for, and the functional currency amounts are in.
SELECT ap.period, ap.status, ap.start_date, ap.end_date, st.functional_currency
FROM gl.setting AS st
JOIN gl.accounting_period AS ap ON ap.period = %(period)s;

-- name: report_large_transactions
-- Source rows of the period at or above the threshold in functional currency.
SELECT * FROM gl.large_transaction_report(%(period)s, %(threshold)s, %(batch_id)s);

-- name: report_high_value
-- The same at the high-value threshold.
SELECT * FROM gl.high_value_transaction_report(%(period)s, %(threshold)s, %(batch_id)s);

-- name: report_trial_balance
-- Per-account movements of the period (or of one batch, a draft's included) and
-- the checks that they balance.
SELECT * FROM gl.trial_balance(%(period)s, %(batch_id)s);

-- name: report_reversals
-- Every reversing entry posted in the period, with the entry it reverses and why.
SELECT * FROM gl.reversal_register(%(period)s);

-- name: report_integrity
-- The period's batches, their seals and the verification of each.
SELECT * FROM audit.integrity_report(%(period)s);

-- name: report_upr
-- Written premium, opening and closing UPR, its change and the premium earned,
-- per line of business and currency (refused without a committed period-end).
SELECT * FROM gl.upr_report(%(period)s);

-- name: report_fx_revaluation
-- The period-end's FX revaluation per monetary account and currency, its
-- entry and whether the next period has reversed it.
SELECT * FROM gl.fx_revaluation_report(%(period)s);

-- name: report_period_end
-- The period-end batch a period-end report reads, for its header.
SELECT r.batch_id, r.status, r.mode, r.finished_at
FROM batch.run AS r
WHERE r.batch_id = gl.period_end_batch(%(period)s);

-- Audit verification (monthend verify): the checks run together in one
-- read-only REPEATABLE READ transaction (verify_chain, verify_batch,
-- audit_head and committed_batches above, and these); the run is recorded
-- afterwards in a transaction of its own.

-- name: verify_ledger
-- Every problem with the ledger as a whole (none: all is well).
SELECT * FROM audit.verify_ledger();

-- name: verify_kept_head
-- Whether a head kept outside the database is still in the chain (none: it is).
SELECT * FROM audit.verify_kept_head(%(seq)s, %(hash)s);

-- name: record_verification
-- Record a verification run in the audit chain as a VERIFICATION_RUN event.
SELECT audit.record_verification(%(result)s::jsonb) AS seq;

-- Benchmark (monthend bench). Queries with {placeholders} take identifiers,
-- composed with psycopg.sql in bench.py: the scratch tables of the raw-write
-- reference are named after the batch.

-- name: bench_server_settings
-- The settings a benchmark figure depends on.
SELECT current_setting('server_version') AS server_version,
       current_setting('fsync') AS fsync,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('wal_level') AS wal_level,
       current_setting('full_page_writes') AS full_page_writes,
       current_setting('shared_buffers') AS shared_buffers,
       current_setting('work_mem') AS work_mem,
       current_setting('maintenance_work_mem') AS maintenance_work_mem,
       current_setting('max_wal_size') AS max_wal_size,
       current_setting('jit') AS jit;

-- name: bench_period_state
-- Why a period is not fresh for a benchmark (all false and status OPEN or NULL: it is).
SELECT (SELECT status FROM gl.accounting_period WHERE period = %(period)s) AS period_status,
       EXISTS (SELECT FROM batch.run WHERE period = %(period)s) AS has_batch,
       to_regclass('gl.journal_entry_header_' || replace(%(period)s, '-', '_')) IS NOT NULL
           OR to_regclass('gl.journal_entry_line_' || replace(%(period)s, '-', '_'))
              IS NOT NULL AS has_partition,
       EXISTS (SELECT FROM subledger.premium_transaction AS p
               WHERE p.payment_date >= to_date(%(period)s, 'YYYY-MM')
                 AND p.payment_date < (to_date(%(period)s, 'YYYY-MM')
                                       + interval '1 month')::date)
           OR EXISTS (SELECT FROM subledger.claims_transaction AS c
                      WHERE c.claim_date >= to_date(%(period)s, 'YYYY-MM')
                        AND c.claim_date < (to_date(%(period)s, 'YYYY-MM')
                                            + interval '1 month')::date)
           AS has_source_rows;

-- name: bench_free_period
-- The first month from %(first)s on with no source rows, no batch, no ledger partition.
SELECT to_char(m.month, 'YYYY-MM') AS period
FROM generate_series(to_date(%(first)s, 'YYYY-MM'),
                     to_date(%(first)s, 'YYYY-MM') + interval '1199 months',
                     interval '1 month') AS m (month)
WHERE NOT EXISTS (SELECT FROM batch.run AS r WHERE r.period = to_char(m.month, 'YYYY-MM'))
  AND NOT EXISTS (SELECT FROM gl.accounting_period AS ap
                  WHERE ap.period = to_char(m.month, 'YYYY-MM') AND ap.status <> 'OPEN')
  AND to_regclass('gl.journal_entry_header_' || to_char(m.month, 'YYYY_MM')) IS NULL
  AND to_regclass('gl.journal_entry_line_' || to_char(m.month, 'YYYY_MM')) IS NULL
  AND NOT EXISTS (SELECT FROM subledger.premium_transaction AS p
                  WHERE p.payment_date >= m.month::date
                    AND p.payment_date < (m.month + interval '1 month')::date)
  AND NOT EXISTS (SELECT FROM subledger.claims_transaction AS c
                  WHERE c.claim_date >= m.month::date
                    AND c.claim_date < (m.month + interval '1 month')::date)
ORDER BY m.month
LIMIT 1;

-- name: bench_vacuum_source
-- Visibility map and hint bits of freshly generated rows, set once before any
-- timed pass, so that neither pass pays for them.
VACUUM subledger.premium_transaction, subledger.claims_transaction;

-- name: bench_period_end_counts
-- What a period-end batch computed: policies in force with premium, UPR rows,
-- the ledger's batches it summed.
SELECT (SELECT count(DISTINCT d.policy_id) FROM gl.upr_detail AS d
         WHERE d.batch_id = %(batch_id)s) AS policies_with_upr,
       (SELECT count(*) FROM gl.upr_detail AS d WHERE d.batch_id = %(batch_id)s) AS upr_rows,
       (SELECT (e.detail ->> 'policies')::bigint FROM batch.event AS e
         WHERE e.batch_id = %(batch_id)s AND e.kind = 'PREFLIGHT_RANGES'
         ORDER BY e.event_id DESC LIMIT 1) AS policies_in_force,
       (SELECT (e.detail ->> 'policy_ranges')::bigint FROM batch.event AS e
         WHERE e.batch_id = %(batch_id)s AND e.kind = 'PREFLIGHT_RANGES'
         ORDER BY e.event_id DESC LIMIT 1) AS policy_ranges,
       (SELECT (e.detail ->> 'ledger_ranges')::bigint FROM batch.event AS e
         WHERE e.batch_id = %(batch_id)s AND e.kind = 'PREFLIGHT_RANGES'
         ORDER BY e.event_id DESC LIMIT 1) AS ledger_ranges,
       (SELECT count(*) FROM subledger.policy) AS policies;

-- name: claim_partition
-- A period's partition of batch.source_claim (the name's one definition).
SELECT batch.claim_partition_name(%(period)s) AS name;

-- name: bench_vacuum_claims
-- The claims a cancelled batch released, vacuumed before the next batch claims again.
VACUUM {claims};

-- name: bench_checkpoint
-- Start each timed pass with no dirty buffers left by the previous step.
CHECKPOINT;

-- name: bench_wal
-- The server's WAL position and its WAL counters (pg_stat_wal, as the
-- backends have reported them): taken before and after the measured run.
SELECT pg_current_wal_lsn()::text AS lsn, w.wal_records, w.wal_fpi, w.wal_bytes
FROM pg_stat_wal AS w;

-- name: bench_wal_since
-- The WAL written since a position, in bytes.
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %(lsn)s::pg_lsn)::bigint AS bytes;

-- name: bench_parallel_seconds
-- How long at least two of a batch's backends were busy at once: over the
-- intervals its workers worked (pre-flight's ranges, processing's ranges, the
-- pieces of its staging tables' preparation), a sweep that counts the intervals
-- open at each moment. The rest of the run's wall time is its serial part.
WITH busy AS (
    SELECT rg.preflight_started_at AS lo, rg.preflight_finished_at AS hi
    FROM batch.range AS rg
    WHERE rg.batch_id = %(batch_id)s AND rg.preflight_started_at IS NOT NULL
    UNION ALL
    SELECT rg.started_at, rg.finished_at
    FROM batch.range AS rg
    WHERE rg.batch_id = %(batch_id)s AND rg.status = 'DONE'
    UNION ALL
    SELECT sp.started_at, sp.finished_at
    FROM batch.validation_piece AS sp
    WHERE sp.batch_id = %(batch_id)s AND sp.finished_at IS NOT NULL
), edge AS (
    SELECT b.lo AS at, 1 AS step FROM busy AS b
    UNION ALL
    SELECT b.hi, -1 FROM busy AS b
), level AS (
    -- At one instant, ends before starts: touching intervals do not overlap.
    SELECT e.at, sum(e.step) OVER w AS open, lead(e.at) OVER w AS next_at
    FROM edge AS e
    WINDOW w AS (ORDER BY e.at, e.step ROWS UNBOUNDED PRECEDING)
)
SELECT round(coalesce(sum(extract(epoch FROM l.next_at - l.at)) FILTER (WHERE l.open >= 2),
                      0)::numeric, 3) AS parallel_seconds,
       (SELECT count(*) FROM busy) AS intervals
FROM level AS l;

-- name: bench_longest_validation_piece
-- The longest piece of a batch's staging tables' preparation: no number of
-- connections makes that phase shorter than it.
SELECT sp.stage_table, sp.task,
       round(extract(epoch FROM sp.finished_at - sp.started_at)::numeric, 3) AS seconds
FROM batch.validation_piece AS sp
WHERE sp.batch_id = %(batch_id)s AND sp.finished_at IS NOT NULL
ORDER BY sp.finished_at - sp.started_at DESC
LIMIT 1;

-- name: bench_range_seconds
-- Worker seconds spent in a batch's done ranges, and the seal's part of them
-- where the run records it (a seal_seconds column of batch.range or batch.run,
-- seal_seconds in the RANGE_DONE events, or a seal phase).
SELECT (SELECT round(sum(extract(epoch FROM rg.finished_at - rg.started_at))::numeric, 3)
          FROM batch.range AS rg
         WHERE rg.batch_id = %(batch_id)s AND rg.status = 'DONE') AS range_seconds,
       coalesce(
           (SELECT sum((to_jsonb(rg) ->> 'seal_seconds')::numeric)
              FROM batch.range AS rg
             WHERE rg.batch_id = %(batch_id)s AND rg.status = 'DONE'),
           (SELECT (to_jsonb(r) ->> 'seal_seconds')::numeric
              FROM batch.run AS r WHERE r.batch_id = %(batch_id)s),
           (SELECT sum((e.detail ->> 'seal_seconds')::numeric)
              FROM batch.event AS e
             WHERE e.batch_id = %(batch_id)s AND e.kind = 'RANGE_DONE'),
           (SELECT coalesce(r.phase_seconds ->> 'seal', r.phase_seconds ->> 'seal_seconds')::numeric
              FROM batch.run AS r WHERE r.batch_id = %(batch_id)s)) AS seal_seconds;

-- name: bench_raw_create
-- An unindexed, logged table of a ledger table's shape (columns and NOT NULL only).
CREATE TABLE {raw} (LIKE {ledger});

-- name: bench_raw_insert
-- The raw-write reference: a batch's finished rows copied by one plain INSERT ... SELECT.
INSERT INTO {raw} SELECT * FROM {ledger} WHERE batch_id = %(batch_id)s;

-- name: bench_raw_drop
-- Drop a raw-write scratch table.
DROP TABLE IF EXISTS {raw};

-- name: bench_batch_status
-- The status of a batch, for the benchmark's report.
SELECT status FROM batch.run WHERE batch_id = %(batch_id)s;

-- Period lifecycle (monthend period): the procedures gl.open_period,
-- gl.close_period, gl.reopen_period and gl.lock_period (procedures/), the
-- closing checks (gl.period_close_checks) and gl.period_summary.

-- name: period_list
-- Every period: status, latest transition, numbers used, batches, open dead letters, seal.
SELECT * FROM gl.period_summary ORDER BY period;

-- name: period_summary
-- One period's row of period_list.
SELECT * FROM gl.period_summary WHERE period = %(period)s;

-- name: period_open
-- Open a FUTURE period, or create one that has no row, for posting.
CALL gl.open_period(%(period)s, %(reason)s);

-- name: period_close
-- Check, write the balances of, and seal an OPEN period; raises naming the failed checks.
CALL gl.close_period(%(period)s, %(carry_dead_letters)s, %(reason)s);

-- name: period_reopen
-- Reopen the latest CLOSED period for a reason, discarding its balances.
CALL gl.reopen_period(%(period)s, %(reason)s);

-- name: period_lock
-- Close a CLOSED period permanently.
CALL gl.lock_period(%(period)s, %(reason)s);

-- name: period_close_checks
-- Where a period stands against its closing checks, now (read only).
SELECT check_name, passed, expected, actual, detail, hint
FROM gl.period_close_checks(%(period)s, %(carry_dead_letters)s);

-- name: period_recorded_checks
-- The closing checks the period's latest close recorded.
SELECT c.check_name, c.status, c.expected, c.actual, c.detail
FROM gl.period_check AS c
JOIN gl.accounting_period AS ap ON ap.period = c.period AND ap.closed_at = c.closed_at
WHERE c.period = %(period)s
ORDER BY c.check_id;

-- name: period_seal_batches
-- The batches a closed period's seal covers, in commit order.
SELECT seal_order, batch_id, encode(digest, 'hex') AS digest, lines, functional_debit,
       functional_credit
FROM gl.period_seal_batch WHERE period = %(period)s ORDER BY seal_order;

-- name: prove_entry
-- The inclusion proof of one journal entry (seal version 2), one JSON object.
SELECT audit.prove_entry(%(je_number)s) AS proof;

-- name: ledger_partitions
-- Every ledger partition (monthly, then the batches under it), for monthend partitions.
SELECT ledger_table, period, batch_id, partition_name, rows, bytes, period_status, location,
       archive
FROM gl.ledger_partition
ORDER BY period, ledger_table, batch_id NULLS FIRST;

-- name: premade_months
-- How many months after the latest open period have their partitions made.
SELECT base_period, months FROM gl.premade_months();

-- name: ensure_partitions_ahead
-- Make the open periods' partitions and those of the months after; the names created.
SELECT name FROM gl.ensure_partitions_ahead(%(months)s) AS name;

-- name: archive_period_state
-- A period as `monthend archive` and `restore` see it: status, seal, the
-- archive it was let go to, its date bounds and the period before it (whose
-- seal its own seal chains from).
SELECT ap.period::text AS period, ap.status, ap.start_date, ap.end_date,
       encode(ap.seal_digest, 'hex') AS seal_digest, ap.status_detail,
       prev.period::text AS previous_period,
       encode(prev.seal_digest, 'hex') AS previous_seal_digest
FROM gl.accounting_period AS ap
LEFT JOIN LATERAL (SELECT p.period, p.seal_digest FROM gl.accounting_period AS p
                   WHERE p.period < ap.period ORDER BY p.period DESC LIMIT 1) AS prev ON true
WHERE ap.period = %(period)s;

-- name: archive_batches
-- The period's committed batches with their seal: version, batch root, range
-- roots in range order, and the chain row that sealed them.
SELECT r.batch_id, r.kind, r.seal_version, encode(r.digest, 'hex') AS batch_root,
       coalesce(r.je_count, 0) AS entries, coalesce(r.line_count, 0) AS lines,
       coalesce((SELECT array_agg(encode(g.digest, 'hex') ORDER BY g.range_no)
                 FROM batch.range AS g WHERE g.batch_id = r.batch_id), '{}') AS range_roots,
       l.seq AS audit_seq, encode(l.hash, 'hex') AS audit_hash
FROM batch.run AS r
LEFT JOIN LATERAL (SELECT x.seq, x.hash FROM audit.log AS x
                   WHERE x.batch_id = r.batch_id AND x.event = 'BATCH_COMMITTED'
                   ORDER BY x.seq DESC LIMIT 1) AS l ON true
WHERE r.period = %(period)s AND r.status = 'COMMITTED'
ORDER BY r.batch_id;

-- name: archive_ranges
-- The je_id blocks of the period's committed batches' ranges, in batch and
-- range order: the ledger's files are written range by range.
SELECT g.batch_id, r.je_id_base + g.je_offset AS lo,
       r.je_id_base + g.je_offset + g.je_count - 1 AS hi
FROM batch.range AS g
JOIN batch.run AS r ON r.batch_id = g.batch_id
WHERE r.period = %(period)s AND r.status = 'COMMITTED' AND g.je_count > 0
ORDER BY g.batch_id, g.range_no;

-- name: archive_period_events
-- The chain rows of the period's latest close and lock, and the chain's head.
SELECT (SELECT jsonb_build_object('seq', l.seq, 'hash', encode(l.hash, 'hex'))
        FROM audit.log AS l WHERE l.event = 'PERIOD_CLOSED' AND l.payload ->> 'period' = %(period)s
        ORDER BY l.seq DESC LIMIT 1) AS period_closed,
       (SELECT jsonb_build_object('seq', l.seq, 'hash', encode(l.hash, 'hex'))
        FROM audit.log AS l WHERE l.event = 'PERIOD_LOCKED' AND l.payload ->> 'period' = %(period)s
        ORDER BY l.seq DESC LIMIT 1) AS period_locked,
       (SELECT jsonb_build_object('seq', h.seq, 'hash', encode(h.hash, 'hex'))
        FROM audit.chain_head AS h) AS head;

-- name: archive_rows_fingerprint
-- The period's claims and reversed postings, fingerprinted (count and hash sum).
SELECT gl.archive_rows_fingerprint(%(period)s) AS fingerprint;

-- name: archive_let_go
-- Drop an archived period's partitions, make it ARCHIVED, seal that in the chain.
CALL gl.archive_period(%(period)s, %(manifest_sha256)s, %(location)s, %(sealed)s, %(reason)s);

-- name: retention_months
-- How long a permanently closed period stays in the database.
SELECT retention_months FROM gl.setting;

-- name: archive_due
-- The permanently closed periods that ended more than gl.setting.retention_months ago.
SELECT ap.period::text AS period
FROM gl.accounting_period AS ap CROSS JOIN gl.setting AS s
WHERE ap.status = 'PERMANENTLY_CLOSED'
  AND ap.end_date < (current_date - make_interval(months => s.retention_months))::date
ORDER BY ap.period;

-- name: restore_prepare
-- Make an archived period's partitions again, empty; the batches to load.
SELECT batch_id FROM gl.restore_period_prepare(%(period)s, %(manifest_sha256)s);

-- name: restore_finish
-- Check and verify what was loaded, make the period RESTORED.
CALL gl.restore_period(%(period)s, %(manifest_sha256)s, %(location)s, %(reason)s);

-- name: connection_capacity
-- What the server can take: its usable connections (max_connections less the
-- superuser reserve), the client sessions connected now, the cores the DBA
-- recorded (gl.setting.server_cores) and the monthend range workers running
-- now (of any batch, from any host).
SELECT current_setting('max_connections')::integer
       - current_setting('superuser_reserved_connections')::integer AS usable,
       count(*) AS used,
       (SELECT s.server_cores FROM gl.setting AS s) AS server_cores,
       count(*) FILTER (WHERE a.application_name ~ '^monthend .+/w[0-9]+$') AS running_workers
FROM pg_stat_activity AS a
WHERE a.backend_type = 'client backend';
