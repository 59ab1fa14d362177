/*
 * batchflow install script, part 20: the engine's SQL side.
 *
 * Advancing a run from node to node and closing a loop are C functions
 * (src/loop_start.c, src/loop_close.c) that bf_start and the workers call
 * directly; the SQL entry points below serve bf_cancel and the child-run
 * functions.  They run as the extension owner and are not callable by
 * ordinary roles.  The user-facing bf_* functions are C
 * functions that record the caller as owner before switching to the
 * extension owner for these writes.
 */

-- Hooks into the C side: wake the workers / bf_wait sleepers at commit.
CREATE FUNCTION batchflow._wake_on_commit() RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_wake_on_commit';
COMMENT ON FUNCTION batchflow._wake_on_commit() IS 'Internal: wake the item workers when this transaction commits';

CREATE FUNCTION batchflow._run_finished_on_commit() RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_run_finished_on_commit';
COMMENT ON FUNCTION batchflow._run_finished_on_commit() IS 'Internal: wake bf_wait callers when this transaction commits';

CREATE FUNCTION batchflow.active_items(
    OUT pid int, OUT run_id bigint, OUT loop_ref bigint, OUT idx int, OUT started_at timestamptz)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_active_items';
COMMENT ON FUNCTION batchflow.active_items() IS 'Items executing right now, one row per busy worker, read from shared memory';

/*
 * Diagnostic and testing entry point: claim the next item of one loop the
 * way a worker does (a free slot under the loop's cap, then the next
 * pending item with FOR UPDATE SKIP LOCKED) and hold both until the
 * caller's transaction ends.  The isolation tests race sessions through it.
 */
CREATE FUNCTION batchflow.claim_item(loop_ref bigint) RETURNS int
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_claim_item';
COMMENT ON FUNCTION batchflow.claim_item(bigint) IS 'Diagnostics: claim the next item of a loop like a worker (slot under the cap + FOR UPDATE SKIP LOCKED), hold it until the transaction ends, return its index or NULL';
REVOKE ALL ON FUNCTION batchflow.claim_item(bigint) FROM PUBLIC;

/*
 * Create the loop row (and its items) for top-level node k of a run, or
 * finish the run when k is past the last node.  Nodes whose input is an
 * empty array complete at once and the run moves on.  An input source that
 * is not an array fails the run with an error that names the source.  In C
 * (src/loop_start.c): bf_start and the workers call it directly; this entry
 * point serves batchflow._start_child.
 */
CREATE FUNCTION batchflow._advance(p_run bigint, p_from int) RETURNS void
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'bf_sql_advance';
COMMENT ON FUNCTION batchflow._advance(bigint, int) IS 'Internal: move a run to its next top-level node, creating that node''s loop and items';

/*
 * Close a loop whose items have all ended, and move its run on.  A failed
 * or cancelled loop first marks its pending items skipped (those a worker
 * holds are left to finish).  Returns true if this call closed the loop.
 * Safe to call any number of times from any number of sessions.  In C
 * (src/loop_close.c): the workers call it directly; this entry point
 * serves bf_cancel and the child-run triggers.
 */
CREATE FUNCTION batchflow._close_loop(p_loop bigint) RETURNS boolean
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'bf_sql_close_loop';
COMMENT ON FUNCTION batchflow._close_loop(bigint) IS 'Internal: close a loop whose items have all ended and advance its run';

REVOKE ALL ON FUNCTION batchflow._wake_on_commit(), batchflow._run_finished_on_commit(),
    batchflow._advance(bigint, int), batchflow._close_loop(bigint) FROM PUBLIC;

-- The user-facing API ---------------------------------------------------------

CREATE FUNCTION bf_start(workflow text, input jsonb DEFAULT '{}') RETURNS bigint
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_start';
COMMENT ON FUNCTION bf_start(text, jsonb) IS 'Start a run of the newest version of a workflow; the run exists only if the calling transaction commits';

CREATE FUNCTION bf_wait(run bigint, timeout interval DEFAULT '10 minutes') RETURNS text
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_wait';
COMMENT ON FUNCTION bf_wait(bigint, interval) IS 'Block until the run is finished or the timeout passes; returns the run''s status';

CREATE FUNCTION bf_cancel(run bigint, force boolean DEFAULT false) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_cancel';
COMMENT ON FUNCTION bf_cancel(bigint, boolean) IS 'Stop claiming new items of a run and mark it cancelled; in-flight items end, or with force are interrupted (rolled back, skipped with error cancelled)';

CREATE FUNCTION bf_retry(run bigint) RETURNS bigint
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_retry';
COMMENT ON FUNCTION bf_retry(bigint) IS 'Re-queue the failed and skipped items of a finished run; returns how many';
