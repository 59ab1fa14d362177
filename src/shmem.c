/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  batchflow's shared memory: one slot per item worker, the wake-up
 *	  machinery, and the condition variable bf_wait sleeps on.
 *
 *	  Nothing here is the source of truth for a run: the tables are.  Shared
 *	  memory only carries what must be fast or live: which item each worker
 *	  executes right now (the "active" figure of the progress views and the
 *	  "running" status of the items view) and the latches to set when new
 *	  work commits.  After a crash it starts empty, which is exactly right:
 *	  nothing is executing.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "batchflow.h"

BfShared   *BfState = NULL;

/* What the current transaction asked to do once it commits. */
static bool wake_pending = false;
static bool runs_done_pending = false;
static bool xact_callback_registered = false;

static Size bf_shmem_size(void);
static void bf_xact_callback(XactEvent event, void *arg);
static void bf_register_xact_callback(void);

PG_FUNCTION_INFO_V1(bf_active_items);

/* Bytes of shared memory batchflow needs. */
static Size
bf_shmem_size(void)
{
	return add_size(offsetof(BfShared, slots),
					mul_size(bf_max_workers, sizeof(BfWorkerSlot)));
}

/* Reserve shared memory (called from the shmem_request_hook). */
void
bf_shmem_request(void)
{
	RequestAddinShmemSpace(bf_shmem_size());
	RequestAddinShmemSpace(bf_progress_shmem_size());
}

/* Create or attach to the shared state (called from shmem_startup_hook). */
void
bf_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BfState = ShmemInitStruct("batchflow", bf_shmem_size(), &found);
	if (!found)
	{
		memset(BfState, 0, bf_shmem_size());
		pg_atomic_init_u64(&BfState->work_generation, 0);
		ConditionVariableInit(&BfState->run_done_cv);
		BfState->nslots = bf_max_workers;
		for (int i = 0; i < BfState->nslots; i++)
			SpinLockInit(&BfState->slots[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
	bf_progress_shmem_startup();
}

/* Set the latch of every item worker and of the launcher. */
void
bf_wake_workers(void)
{
	if (BfState == NULL)
		return;
	pg_atomic_fetch_add_u64(&BfState->work_generation, 1);
	for (int i = 0; i < BfState->nslots; i++)
	{
		BfWorkerSlot *slot = &BfState->slots[i];
		Latch	   *latch;

		SpinLockAcquire(&slot->mutex);
		latch = slot->pid != 0 ? slot->latch : NULL;
		SpinLockRelease(&slot->mutex);
		if (latch)
			SetLatch(latch);
	}
}

/* Make sure bf_xact_callback runs at the end of this transaction. */
static void
bf_register_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(bf_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/* Wake the workers when (and only if) the current transaction commits. */
void
bf_wake_on_commit(void)
{
	bf_register_xact_callback();
	wake_pending = true;
}

/* Wake bf_wait sleepers when the current transaction commits. */
void
bf_runs_finished_on_commit(void)
{
	bf_register_xact_callback();
	runs_done_pending = true;
}

/* At commit, act on what the transaction asked for; at abort, forget it. */
static void
bf_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				bf_wake_workers();
			if (runs_done_pending && BfState != NULL)
				ConditionVariableBroadcast(&BfState->run_done_cv);
			wake_pending = runs_done_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = runs_done_pending = false;
			break;
		default:
			break;
	}
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
	if (BfState == NULL)
		PG_RETURN_VOID();

	for (int i = 0; i < BfState->nslots; i++)
	{
		BfWorkerSlot *slot = &BfState->slots[i];
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		pid_t		pid;
		int64		run_id;
		int64		loop_ref;
		int32		idx;
		TimestampTz started;

		SpinLockAcquire(&slot->mutex);
		pid = slot->pid;
		run_id = slot->run_id;
		loop_ref = slot->loop_ref;
		idx = slot->idx;
		started = slot->started_at;
		SpinLockRelease(&slot->mutex);

		if (pid == 0 || run_id == 0)
			continue;
		values[0] = Int32GetDatum(pid);
		values[1] = Int64GetDatum(run_id);
		values[2] = Int64GetDatum(loop_ref);
		values[3] = Int32GetDatum(idx);
		values[4] = TimestampTzGetDatum(started);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
