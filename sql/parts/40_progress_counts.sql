/*
 * batchflow install script, part 40: progress counts, their tables and
 * the shared-memory functions.  Parts 41 to 45 build on it: the progress
 * computation and its notifications (41), the launcher's rebuild and
 * pruning (42), reports (43), the psql dashboard (44) and monitoring (45).
 *
 * How a loop's counts are known:
 *   - while it runs, base counts (batchflow.loop_progress) + what each
 *     worker wrote (batchflow.progress_counter, one row per loop and worker
 *     slot, written every batchflow.progress_batch_items items or
 *     batchflow.progress_interval) + what the workers counted but have not
 *     written yet (shared memory, batchflow._progress_live());
 *   - when it closes, exact counts from batchflow.item, stored for good in
 *     batchflow.loop_progress (state 'final');
 *   - when the counters cannot be trusted (after a crash, until the
 *     launcher has rebuilt them; for a loop bf_retry re-opened; with
 *     batchflow.track_progress off; while a failed or cancelled loop waits
 *     for its last items), by counting batchflow.item.
 *
 * Progress is announced with NOTIFY batchflow_progress: by the workers at
 * the batched cadence (at most once per loop per progress interval) while
 * the loop runs, and by the triggers below at every status change of a
 * loop or a run (a failed or cancelled loop with nothing left to run is
 * announced once, when it closes).
 */

-- Counts ----------------------------------------------------------------------

CREATE TYPE batchflow.item_counts AS (completed bigint, failed bigint, skipped bigint);
COMMENT ON TYPE batchflow.item_counts IS 'Items of a loop that succeeded, failed and were skipped';

CREATE TABLE batchflow.loop_progress (
    loop_ref    bigint PRIMARY KEY REFERENCES batchflow.loop (id) ON DELETE CASCADE,
    run_id      bigint NOT NULL,
    state       text NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'recount', 'final')),
    completed   bigint NOT NULL DEFAULT 0 CHECK (completed >= 0),
    failed      bigint NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped     bigint NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    failed_attempts bigint CHECK (failed_attempts >= 0),
    last_error  text
);
COMMENT ON TABLE batchflow.loop_progress IS 'Per loop: the base of its progress counts, or its final counts once closed';
COMMENT ON COLUMN batchflow.loop_progress.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.loop_progress.run_id IS 'The run, repeated from the loop';
COMMENT ON COLUMN batchflow.loop_progress.state IS 'live: counts = these + progress_counter + pending; recount: count batchflow.item until the launcher rebuilds; final: these are the exact final counts';
COMMENT ON COLUMN batchflow.loop_progress.completed IS 'Items succeeded (base, or final)';
COMMENT ON COLUMN batchflow.loop_progress.failed IS 'Items failed (base, or final)';
COMMENT ON COLUMN batchflow.loop_progress.skipped IS 'Items skipped (base, or final)';
COMMENT ON COLUMN batchflow.loop_progress.updated_at IS 'When the base or final counts were last set';
COMMENT ON COLUMN batchflow.loop_progress.failed_attempts IS 'Failed attempts of the loop''s items, kept when the history retention deletes its item errors (NULL before)';
COMMENT ON COLUMN batchflow.loop_progress.last_error IS 'The loop''s last item error, kept when the history retention deletes its item errors (NULL before)';

CREATE INDEX loop_progress_recount_idx ON batchflow.loop_progress (loop_ref) WHERE state = 'recount';
CREATE INDEX loop_progress_run_idx ON batchflow.loop_progress (run_id);

CREATE TABLE batchflow.progress_counter (
    loop_ref    bigint NOT NULL REFERENCES batchflow.loop_progress (loop_ref) ON DELETE CASCADE,
    slot        int NOT NULL CHECK (slot >= 0),
    completed   bigint NOT NULL CHECK (completed >= 0),
    failed      bigint NOT NULL CHECK (failed >= 0),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (loop_ref, slot)
);
COMMENT ON TABLE batchflow.progress_counter IS 'Items counted by each worker slot, per loop; written in batches, never shared between workers';
COMMENT ON COLUMN batchflow.progress_counter.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.progress_counter.slot IS 'The worker slot that counted these items';
COMMENT ON COLUMN batchflow.progress_counter.completed IS 'Items succeeded, as written so far';
COMMENT ON COLUMN batchflow.progress_counter.failed IS 'Items failed, as written so far';
COMMENT ON COLUMN batchflow.progress_counter.updated_at IS 'When the worker last wrote this row';

CREATE TABLE batchflow.pruned_run (
    run_id       bigint PRIMARY KEY REFERENCES batchflow.run (id) ON DELETE CASCADE,
    finished_at  timestamptz NOT NULL,
    pruned_at    timestamptz,
    items        bigint NOT NULL CHECK (items >= 0)
);
COMMENT ON TABLE batchflow.pruned_run IS 'Runs whose items were deleted by the history retention (batchflow.history_retention)';
COMMENT ON COLUMN batchflow.pruned_run.run_id IS 'The run';
COMMENT ON COLUMN batchflow.pruned_run.finished_at IS 'When the run had finished when it was pruned';
COMMENT ON COLUMN batchflow.pruned_run.pruned_at IS 'When its last items were deleted; NULL while the launcher is still deleting them';
COMMENT ON COLUMN batchflow.pruned_run.items IS 'How many items and item errors were deleted so far';

CREATE INDEX pruned_run_finished_idx ON batchflow.pruned_run (finished_at);

-- bf_report and the "failed items" history query read only failed items.
CREATE INDEX item_failed_idx ON batchflow.item (run_id, loop_ref, idx) WHERE status = 'failed';

-- Shared memory -------------------------------------------------------------

CREATE FUNCTION batchflow._progress_live(
    OUT loop_ref bigint, OUT pending_completed bigint, OUT pending_failed bigint,
    OUT active int, OUT items_per_sec float8, OUT last_commit_at timestamptz)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_progress_live';
COMMENT ON FUNCTION batchflow._progress_live() IS 'Internal: per loop, counts not yet written, items executing, recent rate and last commit, from shared memory';

CREATE FUNCTION batchflow._progress_exact() RETURNS boolean
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_progress_exact';
COMMENT ON FUNCTION batchflow._progress_exact() IS 'Internal: true while progress must be counted from batchflow.item (counters being rebuilt, or tracking off)';

-- Exact counts of a loop's items, from batchflow.item.
CREATE FUNCTION batchflow._item_counts(p_loop bigint) RETURNS batchflow.item_counts
LANGUAGE sql STABLE AS $$
    SELECT ROW(count(*) FILTER (WHERE status = 'succeeded'),
               count(*) FILTER (WHERE status = 'failed'),
               count(*) FILTER (WHERE status = 'skipped'))::batchflow.item_counts
      FROM batchflow.item WHERE loop_ref = p_loop
$$;
COMMENT ON FUNCTION batchflow._item_counts(bigint) IS 'Internal: exact counts of a loop''s items by final status';
