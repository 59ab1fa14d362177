/*-------------------------------------------------------------------------
 *
 * run.c
 *	  Closing loops and keeping runs moving: when the workers try to close
 *	  a loop (loop_close.c closes it and advances the run), the loops to
 *	  close, and the re-queueing of each database's sweep (db_sweep.c).
 *
 *	  A loop is closed by whichever session first sees it with no pending
 *	  item left (normally the worker that committed its last item, in a
 *	  transaction right after that commit).  The sweep closes
 *	  what a crash between those two transactions left open, and returns
 *	  items that were claimed by a process that no longer exists to the
 *	  queue.
 *
 * IDENTIFICATION
 *	  src/run.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"

#include "batchflow.h"
#include "loop_close.h"
#include "pool.h"
#include "run.h"
#include "spi_util.h"

/*
 * Try to close a loop and advance its run (inside SPI); true if closed.
 * Unless wait, a loop another session holds is left alone and *busy set:
 * try again later (loop_close.c).
 */
bool
bf_loop_try_close(int64 loop_ref, bool wait, bool *busy)
{
	return bf_close_loop(loop_ref, wait, busy);
}

/*
 * Close the loop now (inside SPI, in the caller's transaction) if none of
 * its items is pending or running any more, as this transaction sees it;
 * true if closed.  A loop another session holds is left to the attempt
 * after this transaction's commit.
 */
bool
bf_loop_close_if_done(int64 loop_ref)
{
	static SPIPlanPtr left_plan = NULL;
	static const Oid argtype = INT8OID;
	Datum		arg = Int64GetDatum(loop_ref);
	bool		busy;

	if (SPI_execute_plan(bf_keep_plan(&left_plan,
									  "SELECT 1 FROM batchflow.item"
									  " WHERE loop_ref = $1 AND status IN ('pending', 'running') LIMIT 1",
									  1, &argtype),
						 &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not inspect loop " INT64_FORMAT, loop_ref);
	if (SPI_processed > 0)
		return false;
	return bf_loop_try_close(loop_ref, false, &busy);
}

/*
 * Items marked running (HTTP items, which keep their claim across
 * transactions) whose claim no live worker holds go back to pending (inside
 * SPI).  A claim is held by the worker that recorded it: a live process of
 * the pool serving this database with that pid, started before the claim.
 * So this one path
 * covers a worker that exited while the server runs, every claim after a
 * restart or a crash (whose processes are gone), a pid reused since by a
 * new worker (it started after the claim), a row without a pid, and the
 * claims of a restored dump (made by processes of another server).  The
 * lock manager released the old claimants' cap locks when they exited.
 * Items waiting for a child run (workflow activities) hold no worker:
 * they keep waiting.
 */
void
bf_requeue_orphans(void)
{
	Datum	   *pids;
	int			n = 0;
	Datum		arg;
	Oid			argtype = INT4ARRAYOID;
	bool		child_runs;

	pids = palloc(sizeof(Datum) * Max(bf_pool_nslots(), 1));
	for (int i = 0; i < bf_pool_nslots(); i++)
	{
		BfWorkerView w;

		/* Loop ids and claims are per database: only its workers hold them. */
		if (bf_pool_read_here(i, &w))
			pids[n++] = Int32GetDatum((int32) w.pid);
	}
	arg = PointerGetDatum(construct_array(pids, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
	/* batchflow.item has child_run from 0.2.0 on (the library may be newer). */
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_attribute"
					" WHERE attrelid = 'batchflow.item'::pg_catalog.regclass"
					"   AND attname = 'child_run' AND NOT attisdropped", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not inspect batchflow.item");
	child_runs = SPI_processed > 0;
	if (SPI_execute_with_args(psprintf("UPDATE batchflow.item i SET status = 'pending', worker_pid = NULL"
									   " WHERE i.status = 'running'%s"
									   "   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a"
									   "                    WHERE a.pid = i.worker_pid AND a.pid = ANY ($1)"
									   "                      AND a.backend_start <= i.started_at)",
									   child_runs ? " AND i.child_run IS NULL" : ""),
							  1, &argtype, &arg, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not re-queue orphaned items");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("batchflow re-queued %lu HTTP items of workers that exited",
						(unsigned long) SPI_processed)));
}

/*
 * Open loops that have nothing left to execute, or that were stopped:
 * candidates for bf_loop_try_close.  Returns an array allocated in cxt
 * (call inside SPI).
 */
int64 *
bf_loops_to_close(MemoryContext cxt, int *n)
{
	int64	   *ids;

	if (SPI_execute("SELECT l.id FROM batchflow.loop l"
					" WHERE l.finished_at IS NULL"
					"   AND (l.status <> 'running' OR NOT EXISTS"
					"        (SELECT 1 FROM batchflow.item i"
					"          WHERE i.loop_ref = l.id AND i.status IN ('pending', 'running')))"
					" ORDER BY l.id LIMIT 1000", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list loops to close");
	*n = (int) SPI_processed;
	ids = MemoryContextAlloc(cxt, sizeof(int64) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	return ids;
}
