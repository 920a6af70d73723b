-- The driver's every query, by name. Each is one call of a stored procedure or
-- function, or one read of the control tables; the driver builds no SQL.

-- name: start_run
-- Open a batch for a period; returns its batch_id.
CALL batch.start_run(%(period)s, %(workers)s, %(range_size)s, %(max_attempts)s, NULL);

-- name: preflight
-- Phase 1: gates, dead letters, claims.
CALL batch.preflight(%(batch_id)s);

-- name: allocate_ranges
-- Phase 2: ranges, je_id and je_number blocks, staging tables.
CALL batch.allocate_ranges(%(batch_id)s);

-- name: claim_range
-- Claim the next range of a batch; returns range_id, attempt, ranges not done.
CALL batch.claim_range(%(batch_id)s, %(worker)s, NULL, NULL, NULL);

-- name: process_range
-- Phases 4 and 5 for one claimed range.
CALL batch.process_range(%(range_id)s);

-- name: record_range_failure
-- A range attempt failed: back off and retry, or fail the batch.
CALL batch.record_range_failure(%(range_id)s, %(attempt)s, %(error)s);

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

-- name: cancel_batch
-- Abandon an unfinished batch, leaving nothing behind.
CALL batch.cancel_batch(%(batch_id)s);

-- name: reopen_batch
-- Put a FAILED batch back where it was, for resume.
CALL batch.reopen_batch(%(batch_id)s);

-- name: generate_transactions
-- Synthetic source data for a period.
CALL subledger.generate_transactions(%(period)s, %(txns)s, %(bad_fraction)s, %(seed)s, NULL, NULL, NULL);

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
-- Every problem in the audit chain (none: all is well).
SELECT * FROM audit.verify_chain();

-- name: verify_batch
-- Every problem with one batch's seal (none: all is well).
SELECT * FROM audit.verify_batch(%(batch_id)s);

-- name: audit_head
-- The chain head to keep outside the database.
SELECT * FROM audit.head();

-- name: committed_batches
-- Every committed batch, for verifying them all.
SELECT batch_id FROM batch.run WHERE status = 'COMMITTED' ORDER BY batch_id;
