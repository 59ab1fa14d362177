/*-------------------------------------------------------------------------
 *
 * counter_rebuild.c
 *	  The launcher rebuilds progress counters from batchflow.item when they
 *	  cannot be trusted.
 *
 *	  Counters are rebuilt for every open loop after the server starts or
 *	  crashes (shared memory and the pending counts in it were lost), after
 *	  items finished uncounted (batchflow.track_progress was off), and for
 *	  a loop that bf_retry re-opened.  The rebuild sets the loop's base
 *	  counts to what batchflow.item says, deletes its per-worker counters
 *	  and discards its pending counts, all at once: workers that count
 *	  meanwhile wait on the reconcile lock (see progress_count.c).  Until
 *	  then the views count from batchflow.item.
 *
 *	  The rebuild gives up, to try again at the next sweep, when a counting
 *	  transaction that began before it does not end within 2 seconds (a
 *	  long batch of short items, or an item that follows counted ones in
 *	  the same transaction) or when the reconcile lock cannot be had within
 *	  lock_timeout.  Giving up clears "reconciling" (workers count without
 *	  the lock again and write their counts as usual) and puts back the
 *	  "uncounted" flag it had taken over; "reconcile_all" stays set until a
 *	  rebuild of every loop succeeds, and while it is set workers keep
 *	  counting under the lock without writing, which is right: the
 *	  counters are being replaced, and the views count from batchflow.item
 *	  meanwhile.  (Before the files were split, giving up left
 *	  "reconciling" set until the next successful rebuild, so workers
 *	  stopped writing their counts for that long.)
 *
 * IDENTIFICATION
 *	  src/counter_rebuild.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "counter_rebuild.h"
#include "progress.h"
#include "progress_shared.h"
#include "spi_util.h"

/* How long the rebuild waits for counting transactions to end. */
#define BF_RECONCILE_LOCK_TIMEOUT "2s"

static bool bf_rebuild_wanted(bool *all);
static void bf_rebuild_counters(bool all);

/*
 * The periodic check of the counters of this database (called from its
 * sweep, outside a transaction, once the batchflow schema exists).
 * force_all: rebuild every open loop's, as after a start (the first visit
 * of a database: db_sweep.c).
 */
void
bf_counter_rebuild_sweep(bool force_all)
{
	bool		all;

	if (!bf_progress_exists())
		return;
	if (force_all)
		bf_rebuild_counters(true);
	else if (bf_rebuild_wanted(&all))
		bf_rebuild_counters(all);
}

/*
 * Must counters be rebuilt?  *all: every open loop's (after a start, a
 * crash, or uncounted items), rather than just the loops marked 'recount'.
 */
static bool
bf_rebuild_wanted(bool *all)
{
	bool		wanted;
	bool		reconcile_all;
	bool		uncounted;

	bf_progress_flags(&reconcile_all, &uncounted);
	*all = reconcile_all || (uncounted && bf_track_progress);
	if (*all)
		return true;

	bf_txn_begin("batchflow: checking progress counters");
	if (SPI_execute("SELECT 1 FROM batchflow.loop_progress WHERE state = 'recount' LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for loops to recount");
	wanted = SPI_processed > 0;
	bf_txn_end();
	return wanted;
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
	was_uncounted = bf_progress_rebuild_begin();

	/* Wait (a little) for transactions that counted without it to end. */
	for (int i = 0; i < 200 && bf_pending_any_unlocked(); i++)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	if (bf_pending_any_unlocked())
	{
		bf_progress_rebuild_end(false, was_uncounted);
		return;
	}

	bf_txn_begin("batchflow: rebuilding progress counters");
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
		bf_txn_end();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		bf_progress_rebuild_end(false, was_uncounted);
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		ereport(DEBUG1,
				(errmsg("batchflow postponed rebuilding progress counters: workers are busy")));
		return;
	}
	PG_END_TRY();

	bf_progress_rebuild_end(all, false);
	if (all && n > 0)
		ereport(LOG,
				(errmsg("batchflow rebuilt the progress counters of %d open loops", n)));
}

