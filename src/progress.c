/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  Batched progress counters, counted by the item workers.
 *
 *	  Counting every item in a shared row would make every item transaction
 *	  wait for the previous one's commit.  Instead each worker counts the
 *	  items it finishes in shared memory (its slot's "pending" counts) and
 *	  writes them to its own row of batchflow.progress_counter, keyed by
 *	  (loop, worker slot), every batchflow.progress_batch_items items or
 *	  batchflow.progress_interval, whichever comes first, and whenever it
 *	  runs out of work.  The write is one statement in the transaction of
 *	  the item that triggers it, so it costs no commit of its own, and no
 *	  two workers ever update the same row.  The same write announces the
 *	  progress of a running loop with NOTIFY batchflow_progress, at most
 *	  once per loop per batchflow.progress_interval.  A payload computed in
 *	  the worker's transaction counts the items it just recorded as ended,
 *	  not as active as well (bf_progress_shown_ended).
 *
 *	  Exactness: pending counts change only when a transaction commits
 *	  (an XactCallback), so counters + pending = items finished, at every
 *	  instant, whatever aborts.  Pending counts live in shared memory and
 *	  outlive a worker that exits; the next worker of the slot writes
 *	  them.  A crash wipes shared memory, so then the launcher rebuilds the
 *	  counters of every open loop from batchflow.item (history.c), and the
 *	  views count from batchflow.item until it has done so.  The rebuild
 *	  must not race with workers that count: while it runs, workers take
 *	  the "reconcile" lock in share mode before they count an item, and
 *	  the launcher takes it in exclusive mode, after waiting for every
 *	  transaction that counted without the lock to end.
 *
 *	  A reader adds the counters it sees in its snapshot to the pending
 *	  counts it reads in shared memory a moment later; a write that
 *	  commits in between would be counted twice or not at all.  So each
 *	  slot remembers its last write (transaction id, amounts, whether the
 *	  commit callback applied it), and the reader corrects by that batch
 *	  (bf_progress_slot_pending); bf_progress also re-reads when any write
 *	  happened during its query (moves_begun/moves_done).
 *
 *	  The same commit callback keeps, per loop, a ring of (time, items
 *	  done) samples from which the views compute the recent rate.
 *
 * IDENTIFICATION
 *	  src/progress.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "progress.h"

/* Field 4 of the reconcile lock's advisory tag; slot locks use >= 16. */
#define BF_RECONCILE_LOCK_FIELD4 8
#define BF_RECONCILE_LOCK_KEY	 0x62667072 /* "bfpr" */

bool		bf_track_progress = true;
int			bf_progress_batch_items = BF_DEFAULT_PROGRESS_BATCH;
int			bf_progress_interval_ms = BF_DEFAULT_PROGRESS_MS;
int			bf_history_retention_s = BF_DEFAULT_RETENTION_S;
int			bf_stalled_after_s = BF_DEFAULT_STALLED_S;
double		bf_slow_item_factor = BF_DEFAULT_SLOW_FACTOR;

BfProgressShared *BfProgress = NULL;

/* This worker's slot, found on first use; -2 = not a worker. */
static int	my_slotno = -1;
static BfProgressSlot *my_pslot = NULL;

/* What the current transaction counted and wrote, applied at commit. */
static bool xact_callback_registered = false;
static bool txn_active = false;		/* entered: counted or wrote */
static bool txn_locked = false;		/* holds the reconcile lock */
static int	txn_ndelta = 0;
static int32 txn_items = 0;
static BfCount txn_delta[BF_PENDING_LOOPS];
static bool txn_delta_overflow = false;
static bool txn_flushed = false;	/* wrote pending + delta to the counters */
static bool txn_move_begun = false; /* counted in moves_begun at pre-commit */
static int	txn_nflushed = 0;
static BfCount txn_flushed_pending[BF_PENDING_LOOPS];

/*
 * Items this transaction recorded as ended that this worker's slot still
 * shows as executing (it is cleared only after the commit), and which
 * publication of the slot they belong to.  A payload or view computed in
 * this transaction counts them as ended, so it must not count them as
 * active too (bf_progress_shown_ended).
 */
static int32 txn_ended_shown = 0;
static int32 txn_shown_idx = -1;
static TimestampTz txn_shown_at = 0;

/* Launcher: pending counts to discard when its rebuild commits. */
static bool discard_at_commit = false;
static bool discard_all = false;
static int64 *discard_loops = NULL;
static int	discard_n = 0;

static SPIPlanPtr flush_plan = NULL;
static SPIPlanPtr notify_plan = NULL;

static bool bf_progress_attach(void);
static void bf_progress_enter(void);
static void bf_progress_write(TimestampTz now);
static void bf_progress_xact_callback(XactEvent event, void *arg);
static void bf_progress_at_commit(void);
static void bf_progress_reset_txn(void);
static BfTrackedLoop *bf_tracked_loop(int64 loop_ref, bool create);
static void bf_count_add(BfCount *counts, int *n, int max, int64 loop_ref,
						 int64 completed, int64 failed, bool *overflow);
static void bf_note_uncounted(void);
static void bf_progress_register_callback(void);

/* Declare the progress and history GUCs (from _PG_init, in every backend). */
void
bf_progress_define_gucs(void)
{
	DefineCustomBoolVariable("batchflow.track_progress",
							 "Count finished items for the progress views and notifications.",
							 "Off, the workers count nothing and the progress views count items in batchflow.item instead, which is slower for large loops.",
							 &bf_track_progress,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.progress_batch_items",
							"A worker writes its progress counts after this many items.",
							"Or after batchflow.progress_interval, whichever comes first.",
							&bf_progress_batch_items,
							BF_DEFAULT_PROGRESS_BATCH, 1, BF_MAX_PROGRESS_BATCH,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.progress_interval",
							"Longest time a worker keeps progress counts before writing them.",
							"Also the shortest time between two progress notifications of one loop.",
							&bf_progress_interval_ms,
							BF_DEFAULT_PROGRESS_MS, 10, BF_MAX_PROGRESS_MS,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.history_retention",
							"How long the items of finished runs are kept.",
							"The launcher deletes the items and item errors of runs finished longer ago, in small batches; runs, loops and their final counts stay.  0 keeps them forever.",
							&bf_history_retention_s,
							BF_DEFAULT_RETENTION_S, 0, BF_MAX_RETENTION_S,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.stalled_after",
							"batchflow.stuck_runs lists a running loop as stalled when no item ended for this long.",
							NULL,
							&bf_stalled_after_s,
							BF_DEFAULT_STALLED_S, 1, BF_MAX_RETENTION_S,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomRealVariable("batchflow.slow_item_factor",
							 "batchflow.stuck_runs lists an item executing for more than this many times its loop's p95 item duration.",
							 NULL,
							 &bf_slow_item_factor,
							 BF_DEFAULT_SLOW_FACTOR, 1.0, 1000000.0,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
}

/* Bytes of shared memory the progress subsystem needs. */
Size
bf_progress_shmem_size(void)
{
	return add_size(offsetof(BfProgressShared, slots),
					mul_size(bf_max_workers, sizeof(BfProgressSlot)));
}

/*
 * Create or attach to the progress state (from the shmem startup hook).
 * Created means the server started or restarted after a crash: pending
 * counts, if there were any, are gone, so the counters must be rebuilt.
 */
void
bf_progress_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BfProgress = ShmemInitStruct("batchflow progress", bf_progress_shmem_size(), &found);
	if (!found)
	{
		memset(BfProgress, 0, bf_progress_shmem_size());
		SpinLockInit(&BfProgress->mutex);
		pg_atomic_init_u64(&BfProgress->moves_begun, 0);
		pg_atomic_init_u64(&BfProgress->moves_done, 0);
		BfProgress->reconcile_all = true;
		BfProgress->nslots = bf_max_workers;
		for (int i = 0; i < BfProgress->nslots; i++)
			SpinLockInit(&BfProgress->slots[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The tag of the lock that serialises counting with the launcher's rebuild. */
void
bf_progress_lock_tag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, BF_RECONCILE_LOCK_KEY, 0,
						 BF_RECONCILE_LOCK_FIELD4);
}

/* Find this worker's slot; false if this process is not an item worker. */
static bool
bf_progress_attach(void)
{
	if (my_slotno >= 0)
		return true;
	if (my_slotno == -2 || BfProgress == NULL || BfState == NULL)
		return false;
	for (int i = 0; i < BfState->nslots && i < BfProgress->nslots; i++)
	{
		BfWorkerSlot *slot = &BfState->slots[i];
		pid_t		pid;

		SpinLockAcquire(&slot->mutex);
		pid = slot->pid;
		SpinLockRelease(&slot->mutex);
		if (pid == MyProcPid)
		{
			my_slotno = i;
			my_pslot = &BfProgress->slots[i];
			return true;
		}
	}
	my_slotno = -2;
	return false;
}

/* Remember that items finished uncounted: the launcher will rebuild. */
static void
bf_note_uncounted(void)
{
	if (BfProgress == NULL)
		return;
	SpinLockAcquire(&BfProgress->mutex);
	BfProgress->uncounted = true;
	SpinLockRelease(&BfProgress->mutex);
}

/* Add counts for one loop to a small array of per-loop counts. */
static void
bf_count_add(BfCount *counts, int *n, int max, int64 loop_ref,
			 int64 completed, int64 failed, bool *overflow)
{
	for (int i = 0; i < *n; i++)
	{
		if (counts[i].loop_ref == loop_ref)
		{
			counts[i].completed += completed;
			counts[i].failed += failed;
			return;
		}
	}
	if (*n >= max)
	{
		*overflow = true;
		return;
	}
	counts[*n].loop_ref = loop_ref;
	counts[*n].completed = completed;
	counts[*n].failed = failed;
	(*n)++;
}

/* Have bf_progress_xact_callback called at the end of every transaction. */
static void
bf_progress_register_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(bf_progress_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * First counting or writing of this transaction: announce it in the slot
 * (so that a rebuild waits for it), or, when a rebuild is starting or
 * running, take the reconcile lock in share mode instead.
 */
static void
bf_progress_enter(void)
{
	volatile BfProgressShared *p = BfProgress;
	bool		rebuilding;

	if (txn_active)
		return;
	bf_progress_register_callback();
	txn_active = true;

	SpinLockAcquire(&my_pslot->mutex);
	my_pslot->unlocked_inflight = true;
	SpinLockRelease(&my_pslot->mutex);
	pg_memory_barrier();
	rebuilding = p->reconciling || p->reconcile_all;
	if (rebuilding)
	{
		LOCKTAG		tag;

		/*
		 * Withdraw the announcement first: the rebuild must not wait for a
		 * transaction that waits for it.  This one counts under the lock.
		 */
		SpinLockAcquire(&my_pslot->mutex);
		my_pslot->unlocked_inflight = false;
		SpinLockRelease(&my_pslot->mutex);
		bf_progress_lock_tag(&tag);
		(void) LockAcquire(&tag, ShareLock, false, false);
		txn_locked = true;
	}
}

/*
 * Count an item whose attempt just ended, in the transaction that records
 * it (called right after bf_record_result).  Every path that gives an item
 * its final status succeeded or failed must call this.  The count takes
 * effect when the transaction commits.
 */
void
bf_progress_item_done(BfClaim *claim, BfItemResult *result)
{
	BfLoopInfo *loop = claim->loop;
	bool		final_failure;

	if (!bf_progress_attach())
		return;

	final_failure = !result->ok && !bf_will_retry(claim, result);
	if (!result->ok && !final_failure)
		return;

	if (!bf_track_progress)
	{
		bf_note_uncounted();
		return;
	}

	bf_progress_enter();
	bf_count_add(txn_delta, &txn_ndelta, BF_PENDING_LOOPS, loop->loop_ref,
				 result->ok ? 1 : 0, result->ok ? 0 : 1, &txn_delta_overflow);
	txn_items++;
}

/*
 * The item of claim was just given a final status (succeeded or failed) in
 * this transaction (called by bf_record_result, before anything that
 * announces progress): if this worker's slot shows it as executing,
 * remember that it does so no longer.  The slot shows either one item
 * (idx >= 0: that item) or an HTTP batch (idx = -1: the items claimed by
 * the time it was published, started_at).  A new publication of the slot
 * starts the count afresh.
 */
void
bf_progress_item_ended(BfClaim *claim)
{
	BfWorkerSlot *slot;
	bool		shown;
	int32		idx;
	TimestampTz at;

	if (!bf_progress_attach() || my_slotno >= BfState->nslots)
		return;
	slot = &BfState->slots[my_slotno];
	SpinLockAcquire(&slot->mutex);
	idx = slot->idx;
	at = slot->started_at;
	shown = slot->pid == MyProcPid && slot->run_id != 0 &&
		slot->loop_ref == claim->loop->loop_ref &&
		(idx >= 0 ? idx == claim->idx : claim->started_at <= at);
	SpinLockRelease(&slot->mutex);
	if (!shown)
		return;

	bf_progress_register_callback();
	if (idx != txn_shown_idx || at != txn_shown_at)
	{
		txn_ended_shown = 0;
		txn_shown_idx = idx;
		txn_shown_at = at;
	}
	txn_ended_shown++;
}

/*
 * How many of the items that worker slot slotno shows as executing (its
 * publication idx, started_at) the current transaction has already
 * recorded as ended: nonzero only in the worker's own transaction, whose
 * snapshot counts them as ended.
 */
int32
bf_progress_shown_ended(int slotno, int32 idx, TimestampTz started_at)
{
	if (slotno != my_slotno || txn_ended_shown == 0)
		return 0;
	if (idx != txn_shown_idx || started_at != txn_shown_at)
		return 0;
	return txn_ended_shown;
}

/*
 * Write the pending counts if they are due (called once per worker
 * transaction, inside SPI, before it commits): after
 * batchflow.progress_batch_items items, after batchflow.progress_interval,
 * and when the worker found nothing to do.
 */
void
bf_progress_flush(void)
{
	int			npending;
	int32		items_pending;
	TimestampTz first_pending;
	TimestampTz now;
	bool		due;

	if (!bf_track_progress || !bf_progress_attach())
		return;

	SpinLockAcquire(&my_pslot->mutex);
	npending = my_pslot->npending;
	items_pending = my_pslot->items_pending;
	first_pending = my_pslot->first_pending;
	SpinLockRelease(&my_pslot->mutex);

	if (npending == 0 && txn_ndelta == 0)
		return;

	now = GetCurrentTimestamp();
	if (txn_ndelta == 0)
		due = true;				/* idle: write what waits */
	else if (items_pending + txn_items >= bf_progress_batch_items)
		due = true;
	else if (npending > 0 &&
			 TimestampDifferenceExceeds(first_pending, now, bf_progress_interval_ms))
		due = true;
	else
		due = npending + txn_ndelta > BF_PENDING_LOOPS / 2;
	if (!due)
		return;

	bf_progress_enter();
	if (txn_locked)
		return;					/* a rebuild is running: write later */
	bf_progress_write(now);
}

/* Write pending + this transaction's counts to the counters, and notify. */
static void
bf_progress_write(TimestampTz now)
{
	BfCount		all[BF_PENDING_LOOPS * 2];
	int			nall = 0;
	bool		overflow = false;
	Datum	   *loops;
	Datum	   *completed;
	Datum	   *failed;
	Datum		args[4];
	int			rc;

	if (flush_plan == NULL)
	{
		Oid			types[4] = {INT4OID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
		Oid			ntypes[1] = {INT8OID};

		flush_plan = SPI_prepare("INSERT INTO batchflow.progress_counter AS c"
								 "   (loop_ref, slot, completed, failed, updated_at)"
								 " SELECT d.loop_ref, $1, d.completed, d.failed, clock_timestamp()"
								 "   FROM unnest($2, $3, $4) AS d(loop_ref, completed, failed)"
								 "   JOIN batchflow.loop_progress p"
								 "     ON p.loop_ref = d.loop_ref AND p.state = 'live'"
								 " ON CONFLICT (loop_ref, slot) DO UPDATE"
								 "   SET completed = c.completed + excluded.completed,"
								 "       failed = c.failed + excluded.failed,"
								 "       updated_at = excluded.updated_at",
								 4, types);
		if (flush_plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(flush_plan);
		/*
		 * Only a running loop: a failed or cancelled one is announced by
		 * the triggers when its status changes and when it closes, and the
		 * counts written here are already in those payloads.
		 */
		notify_plan = SPI_prepare("SELECT pg_notify('batchflow_progress', batchflow._progress_json(l.id))"
								  "  FROM batchflow.loop l"
								  " WHERE l.id = $1 AND l.status = 'running'",
								  1, ntypes);
		if (notify_plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(notify_plan);
	}

	SpinLockAcquire(&my_pslot->mutex);
	txn_nflushed = my_pslot->npending;
	memcpy(txn_flushed_pending, my_pslot->pending, sizeof(BfCount) * txn_nflushed);
	SpinLockRelease(&my_pslot->mutex);

	for (int i = 0; i < txn_nflushed; i++)
		bf_count_add(all, &nall, lengthof(all), txn_flushed_pending[i].loop_ref,
					 txn_flushed_pending[i].completed, txn_flushed_pending[i].failed,
					 &overflow);
	for (int i = 0; i < txn_ndelta; i++)
		bf_count_add(all, &nall, lengthof(all), txn_delta[i].loop_ref,
					 txn_delta[i].completed, txn_delta[i].failed, &overflow);

	loops = palloc(sizeof(Datum) * Max(nall, 1));
	completed = palloc(sizeof(Datum) * Max(nall, 1));
	failed = palloc(sizeof(Datum) * Max(nall, 1));
	for (int i = 0; i < nall; i++)
	{
		loops[i] = Int64GetDatum(all[i].loop_ref);
		completed[i] = Int64GetDatum(all[i].completed);
		failed[i] = Int64GetDatum(all[i].failed);
	}
	args[0] = Int32GetDatum(my_slotno);
	args[1] = PointerGetDatum(construct_array(loops, nall, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = PointerGetDatum(construct_array(completed, nall, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(failed, nall, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	rc = SPI_execute_plan(flush_plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not write progress counters: %s", SPI_result_code_string(rc));
	txn_flushed = true;

	/* Announce, at most once per loop per progress interval. */
	for (int i = 0; i < nall; i++)
	{
		BfTrackedLoop *t;
		bool		announce = false;

		SpinLockAcquire(&BfProgress->mutex);
		t = bf_tracked_loop(all[i].loop_ref, true);
		if (t != NULL &&
			TimestampDifferenceExceeds(t->last_notify, now, bf_progress_interval_ms))
		{
			t->last_notify = now;
			announce = true;
		}
		SpinLockRelease(&BfProgress->mutex);
		if (announce)
		{
			Datum		arg = Int64GetDatum(all[i].loop_ref);

			rc = SPI_execute_plan(notify_plan, &arg, NULL, false, 0);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "could not notify progress: %s", SPI_result_code_string(rc));
		}
	}
}

/*
 * The slot whose pending counts are already in the counters this
 * transaction wrote (so that readers in it do not count them twice), or
 * -1.
 */
int
bf_progress_written_slot(void)
{
	return txn_flushed ? my_slotno : -1;
}

/*
 * Read moves_done, then moves_begun.  A reader that gets begun == done
 * before its query, and the same two values after it, knows that no count
 * moved between shared memory and the tables meanwhile: its snapshot and
 * its reading of the pending counts agree.
 */
void
bf_progress_moves_read(uint64 *begun, uint64 *done)
{
	*begun = *done = 0;
	if (BfProgress == NULL)
		return;
	*done = pg_atomic_read_u64(&BfProgress->moves_done);
	pg_read_barrier();
	*begun = pg_atomic_read_u64(&BfProgress->moves_begun);
}

/*
 * The pending counts of worker slot slotno as the active snapshot should
 * see them, into counts[] (BF_PENDING_LOOPS * 2 entries); returns how many.
 *
 * When the slot's last write of its counts to the table committed after
 * the snapshot was taken but its commit callback already took them out of
 * pending, they are added back; when the snapshot sees that commit but the
 * callback has not run yet, they are taken out.  Either way the reader
 * counts them exactly once.
 */
int
bf_progress_slot_pending(int slotno, BfCount *counts)
{
	BfProgressSlot *slot = &BfProgress->slots[slotno];
	BfCount		flushed[BF_PENDING_LOOPS];
	int			n;
	int			nflushed;
	TransactionId xid;
	bool		applied;
	bool		overflow = false;
	int			sign = 0;

	SpinLockAcquire(&slot->mutex);
	n = slot->npending;
	memcpy(counts, slot->pending, sizeof(BfCount) * n);
	xid = slot->flush_xid;
	applied = slot->flush_applied;
	nflushed = slot->nflushed;
	memcpy(flushed, slot->flushed, sizeof(BfCount) * nflushed);
	SpinLockRelease(&slot->mutex);

	if (TransactionIdIsValid(xid) && ActiveSnapshotSet())
	{
		Snapshot	snap = GetActiveSnapshot();
		bool		visible;

		/*
		 * Once applied it committed for sure (and may be old: only the
		 * snapshot is asked).  Not applied yet, it is recent and may still
		 * abort, so ask the commit log too.
		 */
		if (applied)
			visible = !XidInMVCCSnapshot(xid, snap);
		else
			visible = !XidInMVCCSnapshot(xid, snap) && TransactionIdDidCommit(xid);
		if (applied && !visible)
			sign = 1;
		else if (!applied && visible)
			sign = -1;
	}
	for (int i = 0; i < nflushed && sign != 0; i++)
		bf_count_add(counts, &n, BF_PENDING_LOOPS * 2, flushed[i].loop_ref,
					 sign * flushed[i].completed, sign * flushed[i].failed,
					 &overflow);
	return n;
}

/*
 * The tracked-loop entry of loop_ref (caller holds BfProgress->mutex).
 * With create, a missing entry takes a free place or evicts the loop that
 * committed least recently.
 */
static BfTrackedLoop *
bf_tracked_loop(int64 loop_ref, bool create)
{
	BfTrackedLoop *victim = NULL;

	for (int i = 0; i < BF_TRACKED_LOOPS; i++)
	{
		BfTrackedLoop *t = &BfProgress->loops[i];

		if (t->loop_ref == loop_ref)
			return t;
		if (victim == NULL ||
			(victim->loop_ref != 0 &&
			 (t->loop_ref == 0 || t->last_commit < victim->last_commit)))
			victim = t;
	}
	if (!create)
		return NULL;
	memset(victim, 0, sizeof(BfTrackedLoop));
	victim->loop_ref = loop_ref;
	return victim;
}

/* At commit, make this transaction's counts pending and sample the rates. */
static void
bf_progress_at_commit(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		overflow = txn_delta_overflow;

	SpinLockAcquire(&my_pslot->mutex);
	if (txn_flushed)
	{
		/* What was written leaves pending; what came since stays. */
		int			keep = 0;

		for (int i = 0; i < my_pslot->npending; i++)
		{
			BfCount    *c = &my_pslot->pending[i];

			for (int j = 0; j < txn_nflushed; j++)
			{
				if (txn_flushed_pending[j].loop_ref == c->loop_ref)
				{
					c->completed -= txn_flushed_pending[j].completed;
					c->failed -= txn_flushed_pending[j].failed;
					break;
				}
			}
			if (c->completed != 0 || c->failed != 0)
				my_pslot->pending[keep++] = *c;
		}
		my_pslot->npending = keep;
		my_pslot->items_pending = 0;
		my_pslot->first_pending = keep > 0 ? now : 0;
		my_pslot->flush_applied = true;
	}
	else if (txn_ndelta > 0)
	{
		if (my_pslot->npending == 0)
			my_pslot->first_pending = now;
		for (int i = 0; i < txn_ndelta; i++)
			bf_count_add(my_pslot->pending, &my_pslot->npending, BF_PENDING_LOOPS,
						 txn_delta[i].loop_ref, txn_delta[i].completed,
						 txn_delta[i].failed, &overflow);
		my_pslot->items_pending += txn_items;
	}
	my_pslot->unlocked_inflight = false;
	SpinLockRelease(&my_pslot->mutex);

	if (overflow)
		bf_note_uncounted();

	/* Rate samples: items done per loop, at most one sample per BF_SAMPLE_MS. */
	if (txn_ndelta > 0)
	{
		SpinLockAcquire(&BfProgress->mutex);
		for (int i = 0; i < txn_ndelta; i++)
		{
			BfTrackedLoop *t = bf_tracked_loop(txn_delta[i].loop_ref, true);

			if (t == NULL)
				continue;
			t->done += txn_delta[i].completed + txn_delta[i].failed;
			t->last_commit = now;
			if (t->nsamples == 0 ||
				TimestampDifferenceExceeds(t->samples[t->head].at, now, BF_SAMPLE_MS))
			{
				t->head = (t->head + 1) % BF_RATE_SAMPLES;
				t->samples[t->head].at = now;
				t->samples[t->head].done = t->done;
				if (t->nsamples < BF_RATE_SAMPLES)
					t->nsamples++;
			}
		}
		SpinLockRelease(&BfProgress->mutex);
	}
}

/* Forget the current transaction's counting state. */
static void
bf_progress_reset_txn(void)
{
	txn_active = txn_locked = txn_flushed = txn_delta_overflow = false;
	txn_move_begun = false;
	txn_ndelta = txn_nflushed = 0;
	txn_items = 0;
	txn_ended_shown = 0;
	txn_shown_idx = -1;
	txn_shown_at = 0;
}

/*
 * At commit: apply the transaction's counts, or the launcher's discard; at
 * abort: forget them.  Runs before the transaction's locks are released.
 */
static void
bf_progress_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			/* About to move counts from shared memory to the tables. */
			if ((txn_flushed || discard_at_commit) && BfProgress != NULL)
			{
				pg_atomic_fetch_add_u64(&BfProgress->moves_begun, 1);
				txn_move_begun = true;
			}
			if (txn_flushed && my_pslot != NULL)
			{
				SpinLockAcquire(&my_pslot->mutex);
				my_pslot->flush_xid = GetTopTransactionIdIfAny();
				my_pslot->flush_applied = false;
				my_pslot->nflushed = txn_nflushed;
				memcpy(my_pslot->flushed, txn_flushed_pending,
					   sizeof(BfCount) * txn_nflushed);
				SpinLockRelease(&my_pslot->mutex);
			}
			break;
		case XACT_EVENT_COMMIT:
			if (txn_active && my_pslot != NULL)
				bf_progress_at_commit();
			if (discard_at_commit)
			{
				if (discard_all)
					bf_progress_discard_pending(NULL, -1);
				else
					bf_progress_discard_pending(discard_loops, discard_n);
			}
			if (txn_move_begun)
			{
				pg_write_barrier();
				pg_atomic_fetch_add_u64(&BfProgress->moves_done, 1);
			}
			bf_progress_reset_txn();
			discard_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
			if (txn_active && my_pslot != NULL)
			{
				SpinLockAcquire(&my_pslot->mutex);
				my_pslot->unlocked_inflight = false;
				if (txn_flushed)
					my_pslot->flush_xid = InvalidTransactionId;
				SpinLockRelease(&my_pslot->mutex);
			}
			if (txn_move_begun)
				pg_atomic_fetch_add_u64(&BfProgress->moves_done, 1);
			bf_progress_reset_txn();
			discard_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * Ask for the pending counts of the given loops (all, for n < 0) to be
 * discarded when the current transaction commits: it rebuilt their
 * counters from batchflow.item (history.c).  The array must live until
 * then.
 */
void
bf_progress_discard_on_commit(int64 *loops, int n)
{
	bf_progress_register_callback();
	discard_at_commit = true;
	discard_all = n < 0;
	discard_loops = loops;
	discard_n = n;
}

/* Discard every slot's pending counts of the given loops (all, for n < 0). */
void
bf_progress_discard_pending(const int64 *loops, int n)
{
	for (int s = 0; s < BfProgress->nslots; s++)
	{
		BfProgressSlot *slot = &BfProgress->slots[s];
		int			keep = 0;

		SpinLockAcquire(&slot->mutex);
		for (int i = 0; i < slot->npending; i++)
		{
			bool		drop = n < 0;

			for (int j = 0; j < n && !drop; j++)
				drop = slot->pending[i].loop_ref == loops[j];
			if (!drop)
				slot->pending[keep++] = slot->pending[i];
		}
		slot->npending = keep;
		if (keep == 0)
		{
			slot->items_pending = 0;
			slot->first_pending = 0;
		}
		SpinLockRelease(&slot->mutex);
	}
}

/*
 * The recent rate of loop_ref in items per second, over the last
 * BF_RATE_WINDOW_MS: items done since the oldest sample in the window,
 * divided by the time from that sample to the last commit.  Measuring to
 * the last commit rather than to now keeps the time since the last commit
 * (up to one item's duration per worker) from biasing the rate low; once
 * that time exceeds the mean time between items, the loop is slowing down
 * or stalled, and the end of the span moves with the clock so that the
 * rate decays.  False when there is no sample, or too short a span behind
 * it.
 */
bool
bf_progress_rate(int64 loop_ref, TimestampTz now, double *rate,
				 TimestampTz *last_commit)
{
	BfTrackedLoop *t;
	BfRateSample base;
	uint64		done;
	bool		found = false;
	TimestampTz last_commit_at = 0;
	TimestampTz window_start = TimestampTzPlusMilliseconds(now, -BF_RATE_WINDOW_MS);

	*rate = 0;
	*last_commit = 0;
	if (BfProgress == NULL)
		return false;

	SpinLockAcquire(&BfProgress->mutex);
	t = bf_tracked_loop(loop_ref, false);
	if (t != NULL && t->nsamples > 0)
	{
		int			k = t->head;

		base = t->samples[k];
		for (int i = 1; i < t->nsamples; i++)
		{
			k = (k - 1 + BF_RATE_SAMPLES) % BF_RATE_SAMPLES;
			if (t->samples[k].at < window_start)
				break;
			base = t->samples[k];
		}
		done = t->done;
		last_commit_at = t->last_commit;
		found = true;
	}
	SpinLockRelease(&BfProgress->mutex);

	*last_commit = last_commit_at;
	if (!found)
		return false;
	if (!TimestampDifferenceExceeds(base.at, now, BF_RATE_MIN_SPAN_MS))
		return false;
	if (done > base.done && last_commit_at > base.at)
	{
		double		span = (double) (last_commit_at - base.at);
		double		mean_gap = span / (double) (done - base.done);
		double		idle = (double) (now - last_commit_at);

		if (idle > mean_gap)
			span += idle - mean_gap;
		*rate = (double) (done - base.done) / (span / (double) USECS_PER_SEC);
	}
	else
		*rate = (double) (done - base.done) /
			((double) (now - base.at) / (double) USECS_PER_SEC);
	return true;
}
