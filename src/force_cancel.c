/*-------------------------------------------------------------------------
 *
 * force_cancel.c
 *	  bf_cancel(run, force => true): interrupting the items of a run that
 *	  are executing right now, in every worker that holds one.
 *
 *	  The canceller's transaction does what a plain bf_cancel does (the
 *	  run's loops are cancelled, their unclaimed items skipped) and asks for
 *	  the run's interruption at commit: then, and only then, it
 *	    1. notes the run and the time in a small ring of recent force
 *	       cancels (shared memory), and
 *	    2. for every worker slot that shows an item of the run, sets the
 *	       slot's cancel request to the run and sends the worker SIGINT.
 *
 *	  A worker acts on a cancel request only inside its "cancel window",
 *	  which is open exactly while an attempt's SQL children execute in the
 *	  attempt's subtransaction (activity_sql.c).  Its SIGINT handler sets
 *	  QueryCancelPending only when the window is open and the request names
 *	  a run, so the running statement stops at its next interrupt check;
 *	  closing the window looks at the request once more and, if it is set,
 *	  raises the cancel itself.  Either way the error lands in the attempt's
 *	  subtransaction, which rolls back every child's effects, and the item
 *	  is recorded skipped with the error "cancelled" in the item's own
 *	  transaction (bf_record_cancelled).  Outside the window a request is
 *	  never acted on: once the subtransaction is released the attempt's
 *	  effects commit with the item's completion, whatever arrives.  So an
 *	  interruption either rolls the whole attempt back before anything is
 *	  recorded, or nothing: effects never commit twice, never half.
 *
 *	  A stale signal (the worker moved on to another run's item before it
 *	  arrived) finds the request cleared and does nothing: a worker clears
 *	  its request whenever it shows an item of another run.  A worker that
 *	  claimed an item of the run with a snapshot taken before the cancel
 *	  committed, but showed it in its slot only after the canceller looked,
 *	  finds the run in the ring of recent cancels (bf_cancel_note_claim) and
 *	  sets its own request.  HTTP batches look at the request between polls
 *	  and abort their requests (http_batch.c).
 *
 * IDENTIFICATION
 *	  src/force_cancel.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "pool.h"
#include "progress.h"
#include "run_control.h"
#include "spi_util.h"

/* How many recent force cancels are remembered for late claims. */
#define BF_CANCEL_RECENT 32

typedef struct BfCancelRecent
{
	int64		run_id;
	TimestampTz at;				/* when the cancel committed */
} BfCancelRecent;

typedef struct BfCancelShared
{
	slock_t		mutex;			/* protects recent[] and next */
	int			next;
	BfCancelRecent recent[BF_CANCEL_RECENT];
	pg_atomic_uint64 last_at;	/* newest recent[].at: a lock-free fast path */
	int			nslots;
	pg_atomic_uint64 request[FLEXIBLE_ARRAY_MEMBER];	/* per worker slot: run to interrupt */
} BfCancelShared;

static BfCancelShared *BfCancel = NULL;

/* This worker's request word, and its cancel window. */
static pg_atomic_uint64 *my_request = NULL;
static volatile sig_atomic_t window_open = false;
static int64 window_run = 0;

/* Runs the current transaction force-cancels, acted on at commit. */
static List *cancel_at_commit = NIL;
static bool xact_callback_registered = false;

static void bf_cancel_sigint(SIGNAL_ARGS);
static void bf_cancel_xact_callback(XactEvent event, void *arg);
static void bf_cancel_signal_run(int64 run_id);

/* Bytes of shared memory for the cancel requests. */
Size
bf_cancel_shmem_size(void)
{
	return add_size(offsetof(BfCancelShared, request),
					mul_size(bf_max_workers, sizeof(pg_atomic_uint64)));
}

/* Create or attach to the cancel requests (from shmem_startup_hook). */
void
bf_cancel_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BfCancel = ShmemInitStruct("batchflow cancel", bf_cancel_shmem_size(), &found);
	if (!found)
	{
		memset(BfCancel, 0, bf_cancel_shmem_size());
		SpinLockInit(&BfCancel->mutex);
		pg_atomic_init_u64(&BfCancel->last_at, 0);
		BfCancel->nslots = bf_max_workers;
		for (int i = 0; i < BfCancel->nslots; i++)
			pg_atomic_init_u64(&BfCancel->request[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * SIGINT of an item worker.  A statement or lock timeout of the activity
 * signals its own process this way: that is handled as in any backend.
 * Otherwise the running statement is interrupted only for a cancel request
 * of the item's run, and only inside the cancel window; anything else (a
 * request that came too late, pg_cancel_backend) just wakes the worker.
 */
static void
bf_cancel_sigint(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (get_timeout_indicator(STATEMENT_TIMEOUT, false) ||
		get_timeout_indicator(LOCK_TIMEOUT, false))
		StatementCancelHandler(postgres_signal_arg);
	else if (window_open && my_request != NULL &&
			 pg_atomic_read_u64(my_request) == (uint64) window_run)
	{
		QueryCancelPending = true;
		InterruptPending = true;
		SetLatch(MyLatch);
	}
	else
		SetLatch(MyLatch);
	errno = save_errno;
}

/* An item worker takes its slot's cancel request and the SIGINT handler. */
void
bf_cancel_worker_attach(int slotno)
{
	if (BfCancel == NULL || slotno < 0 || slotno >= BfCancel->nslots)
		return;
	my_request = &BfCancel->request[slotno];
	pg_atomic_write_u64(my_request, 0);
	pqsignal(SIGINT, bf_cancel_sigint);
}

/*
 * The worker now shows an item of run run_id (0: none) in its slot (called
 * by worker.c and http_batch.c right after each bf_pool_publish_* call).  A request for another run is
 * forgotten; a force cancel of this run that committed after the current
 * transaction began (so after the claim's snapshot may have been taken)
 * sets the request here, in case the canceller looked at the slot before
 * it showed the item.
 */
void
bf_cancel_note_claim(int64 run_id)
{
	TimestampTz since;
	BfCancelRecent recent[BF_CANCEL_RECENT];

	if (my_request == NULL)
		return;
	if (pg_atomic_read_u64(my_request) != (uint64) run_id)
		pg_atomic_write_u64(my_request, 0);
	if (run_id == 0)
		return;

	since = GetCurrentTransactionStartTimestamp();
	/* Pairs with the canceller's ring write before it reads the slots. */
	pg_memory_barrier();
	if ((TimestampTz) pg_atomic_read_u64(&BfCancel->last_at) < since)
		return;
	/* Copy the ring out under the spinlock; look at the copy outside it. */
	SpinLockAcquire(&BfCancel->mutex);
	memcpy(recent, BfCancel->recent, sizeof(recent));
	SpinLockRelease(&BfCancel->mutex);
	for (int i = 0; i < BF_CANCEL_RECENT; i++)
		if (recent[i].run_id == run_id && recent[i].at >= since)
			pg_atomic_write_u64(my_request, (uint64) run_id);
}

/* Is there a cancel request for this worker's item of run run_id? */
bool
bf_cancel_requested(int64 run_id)
{
	return my_request != NULL && run_id != 0 &&
		pg_atomic_read_u64(my_request) == (uint64) run_id;
}

/*
 * Open the cancel window for an attempt of run run_id's item (inside the
 * attempt's subtransaction, before its first child).  A request that is
 * already there cancels the attempt before anything runs.
 */
void
bf_cancel_window_open(int64 run_id)
{
	if (my_request == NULL)
		return;
	window_run = run_id;
	window_open = true;
	if (bf_cancel_requested(run_id))
		bf_cancel_window_close(true);
}

/*
 * Close the cancel window.  With raise (still inside the subtransaction,
 * after the last child), a request that arrived meanwhile cancels the
 * attempt now: a signal that set QueryCancelPending too late for any
 * interrupt check is turned into the same error here, and never reaches
 * the item's bookkeeping.
 */
void
bf_cancel_window_close(bool raise)
{
	bool		requested;

	if (my_request == NULL || !window_open)
		return;
	window_open = false;
	requested = bf_cancel_requested(window_run);
	if (requested)
		QueryCancelPending = false;
	if (requested && raise)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("canceling statement because run " INT64_FORMAT " was cancelled",
						window_run),
				 errdetail("bf_cancel was called with force => true.")));
}

/* Make sure bf_cancel_xact_callback runs at the end of this transaction. */
void
bf_force_cancel_on_commit(int64 run_id)
{
	MemoryContext old;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(bf_cancel_xact_callback, NULL);
		xact_callback_registered = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	cancel_at_commit = lappend(cancel_at_commit, palloc(sizeof(int64)));
	*(int64 *) llast(cancel_at_commit) = run_id;
	MemoryContextSwitchTo(old);
}

/* Note the run as force-cancelled, then interrupt every worker holding one of its items. */
static void
bf_cancel_signal_run(int64 run_id)
{
	TimestampTz now = GetCurrentTimestamp();

	if (BfCancel == NULL || !bf_pool_exists())
		return;

	SpinLockAcquire(&BfCancel->mutex);
	BfCancel->recent[BfCancel->next].run_id = run_id;
	BfCancel->recent[BfCancel->next].at = now;
	BfCancel->next = (BfCancel->next + 1) % BF_CANCEL_RECENT;
	pg_atomic_write_u64(&BfCancel->last_at, (uint64) now);
	SpinLockRelease(&BfCancel->mutex);

	pg_memory_barrier();

	/*
	 * A slot may change right after it was read: a request for a run the
	 * worker no longer executes is ignored by it and cleared at its next
	 * publication (bf_cancel_note_claim).
	 */
	for (int i = 0; i < bf_pool_nslots() && i < BfCancel->nslots; i++)
	{
		BfWorkerView w;

		if (!bf_pool_read(i, &w) || w.pid == 0 || w.run_id != run_id)
			continue;
		pg_atomic_write_u64(&BfCancel->request[i], (uint64) run_id);
		(void) kill(w.pid, SIGINT);
	}
}

/* At commit, interrupt the items of the force-cancelled runs; at abort, forget them. */
static void
bf_cancel_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			foreach(lc, cancel_at_commit)
				bf_cancel_signal_run(*(int64 *) lfirst(lc));
			list_free_deep(cancel_at_commit);
			cancel_at_commit = NIL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			list_free_deep(cancel_at_commit);
			cancel_at_commit = NIL;
			break;
		default:
			break;
	}
}

/*
 * Record the claimed item as interrupted by a force cancel (inside SPI, in
 * the item's transaction): skipped, with the error "cancelled".  Its
 * attempt's effects were rolled back with its subtransaction.
 */
BfOutcome
bf_record_cancelled(BfClaim *claim)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];

	Oid			types[3] = {INT8OID, INT4OID, TIMESTAMPTZOID};

	bf_keep_plan(&plan, "UPDATE batchflow.item"
				 "   SET status = 'skipped', attempts = attempts + 1, worker_pid = NULL,"
				 "       started_at = $3, finished_at = clock_timestamp(),"
				 "       error = 'cancelled', not_before = NULL"
				 " WHERE loop_ref = $1 AND idx = $2", 3, types);
	args[0] = Int64GetDatum(claim->loop->loop_ref);
	args[1] = Int32GetDatum(claim->idx);
	args[2] = TimestampTzGetDatum(claim->started_at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record item %d as cancelled", claim->idx);
	bf_progress_count(claim, BF_OUTCOME_CANCELLED);
	return BF_OUTCOME_CANCELLED;
}

/*
 * bf_cancel(run, force => true) of a run with child runs (inside SPI, in
 * the canceller's transaction): the items executing in each unfinished
 * child run, grandchild run and so on are interrupted at commit like the
 * run's own (bf_force_cancel_on_commit above).  Their loops were cancelled by
 * _cancel_children in the same transaction, so an interrupted item ends
 * skipped and its run ends cancelled, which completes its parent item.
 */
void
bf_force_cancel_descendants(int64 run_id)
{
	static SPIPlanPtr descendants_plan = NULL;
	Datum		arg = Int64GetDatum(run_id);

	if (descendants_plan == NULL)
	{
		Oid			type = INT8OID;

		bf_keep_plan(&descendants_plan, "WITH RECURSIVE d(id) AS ("
					 "    SELECT c.id FROM batchflow.run c"
					 "     WHERE c.parent_run = $1 AND c.finished_at IS NULL"
					 "  UNION"
					 "    SELECT c.id FROM d JOIN batchflow.run c ON c.parent_run = d.id"
					 "     WHERE c.finished_at IS NULL)"
					 " SELECT id FROM d ORDER BY id", 1, &type);
	}
	if (SPI_execute_plan(descendants_plan, &arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the child runs of run " INT64_FORMAT, run_id);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		bf_force_cancel_on_commit(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
															  SPI_tuptable->tupdesc, 1, &isnull)));
	}
}
