/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  The worker pool's shared memory: one worker slot per item worker,
 *	  and the condition variable bf_wait sleeps on (broadcast at commit by
 *	  wake_commit.c).
 *
 *	  Nothing here is the source of truth for a run: the tables are.  Shared
 *	  memory only carries what must be fast or live: which item each worker
 *	  executes right now (the "active" figure of the progress views and the
 *	  "running" status of the items view) and the latches to set when new
 *	  work commits.  After a crash it starts empty, which is exactly right:
 *	  nothing is executing.
 *
 *	  This file alone touches the structure.  Each worker slot has a
 *	  spinlock that protects straight-line copies of a few fields and
 *	  nothing else: readers copy a slot out (bf_pool_read) and work on the
 *	  copy; system calls (kill, the clock) happen outside the lock.  A
 *	  slot is written only by the worker that serves it (bf_pool_attach,
 *	  the publish functions, the exit callback).  Its callers note a
 *	  published item for force cancels themselves (bf_cancel_note_claim,
 *	  force_cancel.c, right after a publish function): this file calls
 *	  no other file of batchflow.
 *
 * IDENTIFICATION
 *	  src/pool.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/transam.h"
#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "pool.h"

/*
 * One entry per item worker.  The owner writes it under the spinlock;
 * bf_active_items() and the progress views read copies.  pid 0: free.
 */
typedef struct BfWorkerSlot
{
	slock_t		mutex;
	pid_t		pid;
	Latch	   *latch;
	int64		run_id;			/* item being executed, or 0 */
	int64		loop_ref;
	int32		idx;
	TimestampTz started_at;
	int32		nactive;
	TransactionId recorded_xid; /* gave the item shown its result, or invalid */
	Oid			dboid;			/* the database the worker serves */
} BfWorkerSlot;

typedef struct BfPoolShared
{
	ConditionVariable run_done_cv;	/* broadcast when a run finishes */
	int			nslots;
	BfWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} BfPoolShared;

static BfPoolShared *BfPool = NULL;

/* This process's worker slot, if it is an item worker. */
static BfWorkerSlot *my_slot = NULL;
static int	my_slotno = -1;

static void bf_pool_detach(int code, Datum arg);

PG_FUNCTION_INFO_V1(bf_active_items);

/* Bytes of shared memory the pool needs. */
Size
bf_pool_shmem_size(void)
{
	return add_size(offsetof(BfPoolShared, slots),
					mul_size(bf_max_workers, sizeof(BfWorkerSlot)));
}

/* Create or attach to the pool's state (from the shmem startup hook). */
void
bf_pool_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BfPool = ShmemInitStruct("batchflow", bf_pool_shmem_size(), &found);
	if (!found)
	{
		memset(BfPool, 0, bf_pool_shmem_size());
		ConditionVariableInit(&BfPool->run_done_cv);
		BfPool->nslots = bf_max_workers;
		for (int i = 0; i < BfPool->nslots; i++)
			SpinLockInit(&BfPool->slots[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Is there a pool (the library was preloaded)? */
bool
bf_pool_exists(void)
{
	return BfPool != NULL;
}

/* Number of worker slots, 0 without a pool. */
int
bf_pool_nslots(void)
{
	return BfPool != NULL ? BfPool->nslots : 0;
}

/* Copy worker slot slotno into *view; false if no worker serves it. */
bool
bf_pool_read(int slotno, BfWorkerView *view)
{
	volatile BfWorkerSlot *slot;

	memset(view, 0, sizeof(BfWorkerView));
	if (BfPool == NULL || slotno < 0 || slotno >= BfPool->nslots)
		return false;
	slot = &BfPool->slots[slotno];
	SpinLockAcquire(&slot->mutex);
	view->pid = slot->pid;
	view->run_id = slot->run_id;
	view->loop_ref = slot->loop_ref;
	view->idx = slot->idx;
	view->started_at = slot->started_at;
	view->nactive = slot->nactive;
	view->recorded_xid = slot->recorded_xid;
	view->dboid = slot->dboid;
	SpinLockRelease(&slot->mutex);
	return view->pid != 0;
}

/*
 * Copy worker slot slotno into *view; false if no worker serves it or its
 * worker serves another database than this process's.
 */
bool
bf_pool_read_here(int slotno, BfWorkerView *view)
{
	return bf_pool_read(slotno, view) && view->dboid == MyDatabaseId;
}

/* Record the database this worker serves (before it connects). */
void
bf_pool_set_database(Oid dboid)
{
	volatile BfWorkerSlot *slot = my_slot;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->dboid = dboid;
	SpinLockRelease(&slot->mutex);
}

/* This process's worker slot number, or -1 if it is not an item worker. */
int
bf_pool_my_slot(void)
{
	return my_slotno;
}

/* Take worker slot slotno for this process, or exit if it is served. */
void
bf_pool_attach(int slotno)
{
	volatile BfWorkerSlot *slot;
	pid_t		other;
	bool		taken = false;

	if (BfPool == NULL || slotno < 0 || slotno >= BfPool->nslots)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batchflow worker slot %d does not exist", slotno)));
	slot = &BfPool->slots[slotno];

	/*
	 * Read the holder, ask the kernel whether it lives outside the lock,
	 * and take the slot only if the holder did not change meanwhile.
	 */
	SpinLockAcquire(&slot->mutex);
	other = slot->pid;
	SpinLockRelease(&slot->mutex);
	if (other == 0 || kill(other, 0) != 0)
	{
		SpinLockAcquire(&slot->mutex);
		if (slot->pid == other)
		{
			slot->pid = MyProcPid;
			slot->latch = MyLatch;
			slot->run_id = 0;
			slot->nactive = 0;
			slot->recorded_xid = InvalidTransactionId;
			taken = true;
		}
		else
			other = slot->pid;
		SpinLockRelease(&slot->mutex);
	}
	if (!taken)
	{
		ereport(LOG,
				(errmsg("batchflow worker slot %d is already served by process %d",
						slotno, (int) other)));
		proc_exit(0);
	}
	my_slot = &BfPool->slots[slotno];
	my_slotno = slotno;
	before_shmem_exit(bf_pool_detach, (Datum) 0);
}

/* Give the slot back when the process exits. */
static void
bf_pool_detach(int code, Datum arg)
{
	volatile BfWorkerSlot *slot = my_slot;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->pid = 0;
	slot->latch = NULL;
	slot->run_id = 0;
	slot->nactive = 0;
	slot->recorded_xid = InvalidTransactionId;
	slot->dboid = InvalidOid;
	SpinLockRelease(&slot->mutex);
	my_slot = NULL;
	my_slotno = -1;
}

/* Show one item being executed by this worker. */
void
bf_pool_publish_item(int64 run_id, int64 loop_ref, int32 idx,
					 TimestampTz started_at)
{
	volatile BfWorkerSlot *slot = my_slot;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->run_id = run_id;
	slot->loop_ref = loop_ref;
	slot->idx = idx;
	slot->started_at = started_at;
	slot->nactive = 1;
	slot->recorded_xid = InvalidTransactionId;
	SpinLockRelease(&slot->mutex);
}

/* Show an HTTP batch: nactive items of one loop in flight (0: none). */
void
bf_pool_publish_batch(int64 run_id, int64 loop_ref, int nactive)
{
	volatile BfWorkerSlot *slot = my_slot;
	TimestampTz now = GetCurrentTimestamp();

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->run_id = nactive > 0 ? run_id : 0;
	slot->loop_ref = loop_ref;
	slot->idx = -1;
	slot->started_at = now;
	slot->nactive = nactive;
	slot->recorded_xid = InvalidTransactionId;
	SpinLockRelease(&slot->mutex);
}

/* Show that this worker executes nothing. */
void
bf_pool_publish_idle(void)
{
	volatile BfWorkerSlot *slot = my_slot;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->run_id = 0;
	slot->nactive = 0;
	slot->recorded_xid = InvalidTransactionId;
	SpinLockRelease(&slot->mutex);
}

/*
 * The item this worker shows (bf_pool_publish_item) was given its result
 * by the current transaction.  The worker shows itself idle only after
 * that transaction commits; meanwhile readers whose snapshot sees the
 * commit know from this xid that the item no longer executes.
 */
void
bf_pool_publish_recorded(void)
{
	volatile BfWorkerSlot *slot = my_slot;
	TransactionId xid = GetCurrentTransactionIdIfAny();

	if (slot == NULL || !TransactionIdIsValid(xid))
		return;
	SpinLockAcquire(&slot->mutex);
	slot->recorded_xid = xid;
	SpinLockRelease(&slot->mutex);
}

/*
 * Whether the item a slot copy shows has ended: the worker's transaction
 * that gave it its result has committed, but has not cleared the slot
 * yet.  Asked of the commit itself, not of the reader's snapshot: the
 * worker adds the item to its pending counts at that commit, and readers
 * take pending counts from shared memory whatever their snapshot, so a
 * reader whose snapshot began before the commit counted the item as
 * ended there and, when asked of its snapshot, as executing as well
 * (TAP 020: a payload with completed 8 + failed 2 + active 1 of 10).
 * Between the commit and the pending counts the item is counted in
 * neither, for an instant: a count may lag, never exceed.  The worker's
 * own transaction answers false (bf_progress_shown_ended counts its
 * items).
 */
bool
bf_pool_view_recorded(const BfWorkerView *view)
{
	TransactionId xid = view->recorded_xid;

	if (!TransactionIdIsValid(xid) || TransactionIdIsCurrentTransactionId(xid))
		return false;
	return TransactionIdDidCommit(xid);
}

/* The condition variable broadcast when a run finishes, or NULL. */
ConditionVariable *
bf_pool_run_done_cv(void)
{
	return BfPool != NULL ? &BfPool->run_done_cv : NULL;
}

/*
 * bf_active_items() returns (pid, run_id, loop_ref, idx, started_at) for
 * every item a worker is executing right now.
 */
Datum
bf_active_items(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < bf_pool_nslots(); i++)
	{
		BfWorkerView w;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		if (!bf_pool_read_here(i, &w) || w.run_id == 0)
			continue;
		values[0] = Int32GetDatum(w.pid);
		values[1] = Int64GetDatum(w.run_id);
		values[2] = Int64GetDatum(w.loop_ref);
		values[3] = Int32GetDatum(w.idx);
		values[4] = TimestampTzGetDatum(w.started_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
