/*-------------------------------------------------------------------------
 *
 * history.c
 *	  The launcher's share of progress and history: rebuilding progress
 *	  counters from batchflow.item when they cannot be trusted, and pruning
 *	  the items of runs that finished longer ago than
 *	  batchflow.history_retention.
 *
 *	  Counters are rebuilt for every open loop after the server starts or
 *	  crashes (shared memory and the pending counts in it were lost), after
 *	  items finished uncounted (batchflow.track_progress was off), and for
 *	  a loop that bf_retry re-opened.  The rebuild sets the loop's base
 *	  counts to what batchflow.item says, deletes its per-worker counters
 *	  and discards its pending counts, all at once: workers that count
 *	  meanwhile wait on the reconcile lock (see progress.c).  Until then
 *	  the views count from batchflow.item.
 *
 *	  Pruning deletes, one run at a time and a small batch per
 *	  transaction, the item errors and then the items of finished runs,
 *	  and records the run in batchflow.pruned_run.  Runs, loops and their
 *	  final counts stay, so bf_progress still answers for them.  Workers
 *	  never touch a finished run's items; bf_retry of a run being pruned
 *	  waits for one batch at most.
 *
 * IDENTIFICATION
 *	  src/history.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "progress.h"

/* Items (or item errors) deleted per pruning transaction. */
#define BF_PRUNE_BATCH			500
/* Time the launcher spends pruning per sweep. */
#define BF_PRUNE_BUDGET_MS		200
/* How long the rebuild waits for counting transactions to end. */
#define BF_RECONCILE_LOCK_TIMEOUT "2s"

static bool bf_rebuild_wanted(bool *all);
static bool bf_counting_unlocked(void);
static void bf_rebuild_counters(bool all);
static void bf_prune_history(void);
static void bf_begin(const char *activity);
static void bf_end(void);

/* Start a transaction with SPI and a snapshot. */
static void
bf_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Finish SPI and commit. */
static void
bf_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * The launcher's periodic work for progress and history (called from
 * bf_sweep, outside a transaction, once the batchflow schema exists).
 */
void
bf_progress_sweep(void)
{
	bool		all;

	if (BfProgress != NULL && bf_rebuild_wanted(&all))
		bf_rebuild_counters(all);
	if (bf_history_retention_s > 0)
		bf_prune_history();
}

/*
 * Must counters be rebuilt?  *all: every open loop's (after a start, a
 * crash, or uncounted items), rather than just the loops marked 'recount'.
 */
static bool
bf_rebuild_wanted(bool *all)
{
	bool		wanted;

	SpinLockAcquire(&BfProgress->mutex);
	*all = BfProgress->reconcile_all || (BfProgress->uncounted && bf_track_progress);
	SpinLockRelease(&BfProgress->mutex);
	if (*all)
		return true;

	bf_begin("batchflow: checking progress counters");
	if (SPI_execute("SELECT 1 FROM batchflow.loop_progress WHERE state = 'recount' LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for loops to recount");
	wanted = SPI_processed > 0;
	bf_end();
	return wanted;
}

/* Is some worker in a transaction that counts items without the lock? */
static bool
bf_counting_unlocked(void)
{
	for (int s = 0; s < BfProgress->nslots; s++)
	{
		BfProgressSlot *slot = &BfProgress->slots[s];
		bool		inflight;

		SpinLockAcquire(&slot->mutex);
		inflight = slot->unlocked_inflight;
		SpinLockRelease(&slot->mutex);
		if (inflight)
			return true;
	}
	return false;
}

/*
 * Rebuild the counters of every open loop (all) or of the loops marked
 * 'recount', from batchflow.item.  Gives up quietly, to try again at the
 * next sweep, if counting transactions do not end in time.
 */
static void
bf_rebuild_counters(bool all)
{
	MemoryContext cxt = CurrentMemoryContext;
	LOCKTAG		tag;
	int64	   *loops = NULL;
	int			n = 0;
	bool		was_uncounted;

	/* From now on, workers count under the lock. */
	SpinLockAcquire(&BfProgress->mutex);
	BfProgress->reconciling = true;
	was_uncounted = BfProgress->uncounted;
	BfProgress->uncounted = false;
	SpinLockRelease(&BfProgress->mutex);
	pg_memory_barrier();

	/* Wait (a little) for transactions that counted without it to end. */
	for (int i = 0; i < 200 && bf_counting_unlocked(); i++)
	{
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10000L);
	}
	if (bf_counting_unlocked())
	{
		if (was_uncounted)
		{
			SpinLockAcquire(&BfProgress->mutex);
			BfProgress->uncounted = true;
			SpinLockRelease(&BfProgress->mutex);
		}
		return;
	}

	bf_begin("batchflow: rebuilding progress counters");
	PG_TRY();
	{
		Datum		arg;
		Oid			argtype = BOOLOID;

		(void) set_config_option("lock_timeout", BF_RECONCILE_LOCK_TIMEOUT,
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
								 true, 0, false);
		bf_progress_lock_tag(&tag);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);

		/* A new snapshot: every transaction that counted has committed. */
		arg = BoolGetDatum(all);
		if (SPI_execute_with_args("SELECT batchflow._rebuild_counters($1)",
								  1, &argtype, &arg, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not rebuild progress counters");
		n = (int) SPI_processed;
		loops = MemoryContextAlloc(TopTransactionContext, sizeof(int64) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			bool		isnull;

			loops[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc, 1, &isnull));
		}
		bf_progress_discard_on_commit(loops, all ? -1 : n);
		bf_end();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		if (was_uncounted)
		{
			SpinLockAcquire(&BfProgress->mutex);
			BfProgress->uncounted = true;
			SpinLockRelease(&BfProgress->mutex);
		}
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
		{
			SpinLockAcquire(&BfProgress->mutex);
			BfProgress->reconciling = false;
			SpinLockRelease(&BfProgress->mutex);
			ReThrowError(edata);
		}
		ereport(DEBUG1,
				(errmsg("batchflow postponed rebuilding progress counters: workers are busy")));
		return;
	}
	PG_END_TRY();

	SpinLockAcquire(&BfProgress->mutex);
	if (all)
		BfProgress->reconcile_all = false;
	BfProgress->reconciling = false;
	SpinLockRelease(&BfProgress->mutex);
	if (all)
		ereport(LOG,
				(errmsg("batchflow rebuilt the progress counters of %d open loops", n)));
}

/*
 * Delete the items of runs finished longer ago than the retention, a batch
 * per transaction, for at most BF_PRUNE_BUDGET_MS.
 */
static void
bf_prune_history(void)
{
	TimestampTz start = GetCurrentTimestamp();
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];

	args[0] = Int32GetDatum(bf_history_retention_s);
	args[1] = Int32GetDatum(BF_PRUNE_BATCH);
	for (;;)
	{
		bool		isnull;
		int32		deleted;

		CHECK_FOR_INTERRUPTS();
		bf_begin("batchflow: pruning history");
		if (SPI_execute_with_args("SELECT batchflow._prune_history(make_interval(secs => $1), $2)",
								  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not prune history");
		deleted = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
		bf_end();
		if (isnull || deleted == 0 ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), BF_PRUNE_BUDGET_MS))
			break;
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}
