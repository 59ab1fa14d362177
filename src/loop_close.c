/*-------------------------------------------------------------------------
 *
 * loop_close.c
 *	  Closing a loop whose items have all ended, and moving its run on
 *	  (batchflow._close_loop).
 *
 *	  A loop closes when none of its items is pending or running and, for
 *	  a running loop, all its items exist (no batchflow.loop_fill row: the
 *	  workers are not materialising any more, part 25_bigbatch.sql).  A
 *	  loop that failed (fail-fast) or was cancelled first has its pending
 *	  items marked skipped; items a worker holds right now are left to
 *	  finish, and their worker closes the loop afterwards.  Closing sets
 *	  finished_at (a running loop succeeds); then a failed or cancelled
 *	  loop ends its run the same way, and a succeeded one moves the run to
 *	  its next node (loop_start.c).
 *
 *	  Who closes.  Any session may try, any number of times: normally the
 *	  worker that committed the loop's last item (inside that transaction
 *	  when it sees nothing else left, else right after its commit), and
 *	  also bf_cancel, a child run's end, and each database's sweep, which
 *	  closes what a crash between an item's commit and the close left open.
 *
 *	  Why a loop is closed exactly once, and never early.  The loop's row
 *	  is locked FOR UPDATE before anything is decided, and what decides is
 *	  read by statements whose snapshots are taken after the lock is
 *	  granted.  Two closers are therefore serialised, and the second sees
 *	  finished_at set by the first.  An item that any snapshot taken after
 *	  the lock still shows pending or running belongs to a transaction that
 *	  had not committed; its worker tries to close after that commit, so a
 *	  loop is never left open by a closer that looked too early.  The lock
 *	  also conflicts with the FOR KEY SHARE a worker takes before it
 *	  announces a running loop's progress (progress_count.c), so no
 *	  'running' announcement commits after the close's final one.
 *
 *	  Not waiting.  When a loop's items end together, every worker that ran
 *	  one finds it with nothing left and tries to close it; with the lock
 *	  they queued behind the first closer's whole transaction (its run's
 *	  next loop, its commit): 20 ms on average per attempt, about 1.3 extra
 *	  attempts per loop, under pgbench -c 16 starting 5-item runs.  So the
 *	  workers do not wait (SKIP LOCKED): a worker inside its item's
 *	  transaction just leaves the loop to the attempt after its commit;
 *	  after the commit, a worker that found the row locked is told so
 *	  (busy) and looks again after at most BF_CLOSE_RETRY_MS (worker.c),
 *	  until the loop is closed, or its own look finds an item still in
 *	  flight, whose worker then closes it.  The retry is what keeps "never
 *	  left open": the holder may be a closer whose snapshot predates this
 *	  worker's commit, and which therefore did not close.  bf_cancel, the
 *	  child-run triggers and each database's sweep still wait for the lock.
 *
 *	  This was PL/pgSQL until 0.2.0; the workers now call bf_close_loop
 *	  directly, with kept plans.
 *
 * IDENTIFICATION
 *	  src/loop_close.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "batchflow.h"
#include "loop_close.h"
#include "loop_start.h"
#include "wake_commit.h"
#include "spi_util.h"

PG_FUNCTION_INFO_V1(bf_sql_close_loop);

static SPIPlanPtr peek_plan = NULL;
static SPIPlanPtr skip_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr lock_skip_plan = NULL;
static SPIPlanPtr busy_plan = NULL;
static SPIPlanPtr finish_plan = NULL;
static SPIPlanPtr run_stop_plan = NULL;

static const Oid bf_int8_arg[1] = {INT8OID};

static bool bf_close_loop_locked(int64 loop_ref, bool wait, bool *busy);

/*
 * Lock the loop's row and close it if nothing of it is left (inside SPI).
 * True if closed.  Unless wait, a row another session has locked is left
 * alone and *busy set.
 */
static bool
bf_close_loop_locked(int64 loop_ref, bool wait, bool *busy)
{
	static const Oid busy_types[2] = {INT8OID, BOOLOID};
	static const Oid stop_types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		arg = Int64GetDatum(loop_ref);
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	char	   *status;
	char	   *error;
	char	   *node_id;
	int64		run_id;
	int32		node_index;
	Datum		args[3];

	if (wait)
		bf_keep_plan(&lock_plan,
					 "SELECT status, error, node_id, run_id, node_index,"
					 "       finished_at IS NOT NULL"
					 "  FROM batchflow.loop WHERE id = $1 FOR UPDATE",
					 1, bf_int8_arg);
	else
		bf_keep_plan(&lock_skip_plan,
					 "SELECT status, error, node_id, run_id, node_index,"
					 "       finished_at IS NOT NULL"
					 "  FROM batchflow.loop WHERE id = $1 FOR UPDATE SKIP LOCKED",
					 1, bf_int8_arg);
	if (SPI_execute_plan(wait ? lock_plan : lock_skip_plan,
						 &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 0)
	{
		/* Deleted meanwhile, or (not waiting) locked by another session. */
		*busy = !wait;
		return false;
	}
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (DatumGetBool(SPI_getbinval(row, desc, 6, &isnull)))
		return false;			/* another session closed it */
	status = SPI_getvalue(row, desc, 1);
	error = SPI_getvalue(row, desc, 2);
	node_id = SPI_getvalue(row, desc, 3);
	run_id = DatumGetInt64(SPI_getbinval(row, desc, 4, &isnull));
	node_index = DatumGetInt32(SPI_getbinval(row, desc, 5, &isnull));

	/* A statement of its own: its snapshot is taken after the lock. */
	args[0] = arg;
	args[1] = BoolGetDatum(strcmp(status, "running") == 0);
	if (SPI_execute_plan(bf_keep_plan(&busy_plan,
									  "SELECT EXISTS (SELECT 1 FROM batchflow.item"
									  "                WHERE loop_ref = $1 AND status IN ('pending', 'running'))"
									  "    OR ($2 AND EXISTS (SELECT 1 FROM batchflow.loop_fill WHERE loop_ref = $1))",
									  2, busy_types),
						 args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not inspect loop " INT64_FORMAT, loop_ref);
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return false;

	if (SPI_execute_plan(bf_keep_plan(&finish_plan,
									  "UPDATE batchflow.loop"
									  "   SET finished_at = pg_catalog.clock_timestamp(),"
									  "       status = CASE WHEN status = 'running' THEN 'succeeded' ELSE status END"
									  " WHERE id = $1",
									  1, bf_int8_arg),
						 &arg, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not close loop " INT64_FORMAT, loop_ref);

	if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0)
	{
		/* The run ends as its loop did. */
		args[0] = Int64GetDatum(run_id);
		args[1] = CStringGetTextDatum(status);
		if (error != NULL)
			args[2] = CStringGetTextDatum(error);
		else if (strcmp(status, "failed") == 0)
			args[2] = CStringGetTextDatum(psprintf("loop \"%s\" failed", node_id));
		else
			args[2] = CStringGetTextDatum("cancelled");
		if (SPI_execute_plan(bf_keep_plan(&run_stop_plan,
										  "UPDATE batchflow.run"
										  "   SET status = $2, finished_at = pg_catalog.clock_timestamp(), error = $3"
										  " WHERE id = $1 AND finished_at IS NULL",
										  3, stop_types),
							 args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not end run " INT64_FORMAT, run_id);
		bf_runs_finished_on_commit();
	}
	else
		bf_advance(run_id, node_index + 1, false);
	return true;
}

/*
 * Close loop loop_ref if none of its items is left, and move its run on
 * (in the caller's transaction).  True if this call closed it; false if
 * it was closed already, does not exist, or still has items to run.  Call
 * as the extension owner with search_path pinned (a worker, or
 * batchflow._close_loop's SET clause).
 *
 * With wait false, a loop whose row another session holds is not waited
 * for: *busy is set and the caller must try again later (see the header).
 */
bool
bf_close_loop(int64 loop_ref, bool wait, bool *busy)
{
	Datum		arg = Int64GetDatum(loop_ref);
	bool		isnull;
	bool		closed = false;
	char	   *status;

	*busy = false;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* A look without the lock first: most calls find nothing to do. */
	if (SPI_execute_plan(bf_keep_plan(&peek_plan,
									  "SELECT status, finished_at IS NOT NULL FROM batchflow.loop WHERE id = $1",
									  1, bf_int8_arg),
						 &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 0 ||
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
	{
		SPI_finish();
		return false;
	}
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	/* Stopped: the items nobody holds will not run. */
	if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0)
	{
		if (SPI_execute_plan(bf_keep_plan(&skip_plan,
										  "UPDATE batchflow.item i"
										  "   SET status = 'skipped', finished_at = pg_catalog.clock_timestamp(),"
										  "       not_before = NULL"
										  "  FROM (SELECT loop_ref, idx FROM batchflow.item"
										  "         WHERE loop_ref = $1 AND status = 'pending'"
										  "           FOR UPDATE SKIP LOCKED) s"
										  " WHERE i.loop_ref = s.loop_ref AND i.idx = s.idx",
										  1, bf_int8_arg),
							 &arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not skip the items of loop " INT64_FORMAT, loop_ref);
	}

	closed = bf_close_loop_locked(loop_ref, wait, busy);
	SPI_finish();
	return closed;
}

/*
 * batchflow._close_loop(loop bigint) returns boolean
 *
 * SQL access to bf_close_loop, for bf_cancel and the child-run triggers.
 */
Datum
bf_sql_close_loop(PG_FUNCTION_ARGS)
{
	bool		busy = false;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(bf_close_loop(PG_GETARG_INT64(0), true, &busy));
}
