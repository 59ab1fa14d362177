/*-------------------------------------------------------------------------
 *
 * progress_shared.c
 *	  The progress subsystem's shared memory and its locks.
 *
 *	  Per item worker, the counts of items whose transactions committed
 *	  but that are not yet written to batchflow.progress_counter (its
 *	  "pending counts"): kept here rather than in the worker's own memory
 *	  so that a worker that exits leaves them to the next worker of its
 *	  slot, and so that the launcher can discard them when it rebuilds the
 *	  counters.  Per loop, a ring of (time, items done) samples taken at
 *	  commit, from which the views compute a recent-window rate.  And the
 *	  flags of the counter rebuild (reconcile_all, uncounted, reconciling).
 *
 *	  Locking: this file alone touches the structure.  One LWLock per
 *	  worker's pending counts and one for the flags and the rate samples
 *	  (named tranche "batchflow progress"): the sections loop over small
 *	  arrays, which is more than a spinlock should cover.  Every function
 *	  copies data in or out under the lock and does the rest (clock,
 *	  snapshots, palloc, SQL) outside it.  The two counters moves_begun and
 *	  moves_done are atomics.
 *
 * IDENTIFICATION
 *	  src/progress_shared.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "pool.h"
#include "progress_shared.h"

#define BF_PROGRESS_TRANCHE "batchflow progress"

/* One worker's counts waiting to be written. */
typedef struct BfPendingCounts
{
	bool		unlocked_inflight;	/* in a transaction that counts items
									 * without the reconcile lock */
	int			npending;
	int32		items_pending;	/* items counted since the last write */
	TimestampTz first_pending;	/* commit time of the oldest pending item */
	BfCount		pending[BF_PENDING_LOOPS];

	/*
	 * The last transaction that wrote these pending counts to the table,
	 * and what it moved: between its commit becoming visible and its
	 * commit callback, the counts are both in the table and pending;
	 * after, a reader whose snapshot predates the commit finds them in
	 * neither.  Readers use this to correct what they read (see
	 * bf_pending_for_snapshot).
	 */
	TransactionId flush_xid;	/* invalid: none, or it aborted */
	bool		flush_applied;	/* committed, and subtracted from pending */
	int			nflushed;
	BfCount		flushed[BF_PENDING_LOOPS];
} BfPendingCounts;

typedef struct BfRateSample
{
	TimestampTz at;
	uint64		done;
} BfRateSample;

/* The rate samples of one loop. */
typedef struct BfTrackedLoop
{
	int64		loop_ref;		/* 0: free */
	Oid			dboid;			/* the database of the loop */
	uint64		done;			/* items finished since tracked */
	TimestampTz last_commit;
	TimestampTz last_notify;
	int			nsamples;
	int			head;			/* index of the newest sample */
	BfRateSample samples[BF_RATE_SAMPLES];
} BfTrackedLoop;

typedef struct BfProgressShared
{
	/* Under lock 0, with loops[]. */
	bool		reconcile_all;	/* counters of open loops must be rebuilt
								 * (set when shared memory is created, that
								 * is after a start or a crash) */
	bool		uncounted;		/* a worker finished items without counting
								 * them (batchflow.track_progress off) */
	bool		reconciling;	/* the launcher is rebuilding counters */

	/*
	 * Commits that move counts between shared memory and the tables (a
	 * worker's write of its pending counts, the launcher's rebuild): begun
	 * at pre-commit, done once shared memory reflects them.  A reader that
	 * sees begun == done before and after its query knows that its
	 * snapshot and its reading of shared memory agree.
	 */
	pg_atomic_uint64 moves_begun;
	pg_atomic_uint64 moves_done;
	int			nslots;
	BfTrackedLoop loops[BF_TRACKED_LOOPS];
	BfPendingCounts slots[FLEXIBLE_ARRAY_MEMBER];	/* lock 1 + slot number */
} BfProgressShared;

static BfProgressShared *BfProgress = NULL;
static LWLockPadded *progress_locks = NULL;

#define MainLock()			(&progress_locks[0].lock)
#define PendingLock(s)		(&progress_locks[1 + (s)].lock)

static BfTrackedLoop *bf_tracked_loop(int64 loop_ref, bool create);

/* Add counts for one loop to a small array of per-loop counts. */
void
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

/* Bytes of shared memory the progress subsystem needs. */
Size
bf_progress_shmem_size(void)
{
	return add_size(offsetof(BfProgressShared, slots),
					mul_size(bf_max_workers, sizeof(BfPendingCounts)));
}

/* Reserve the shared memory and the locks (shmem_request_hook). */
void
bf_progress_shmem_request(void)
{
	RequestAddinShmemSpace(bf_progress_shmem_size());
	RequestNamedLWLockTranche(BF_PROGRESS_TRANCHE, 1 + bf_max_workers);
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
		pg_atomic_init_u64(&BfProgress->moves_begun, 0);
		pg_atomic_init_u64(&BfProgress->moves_done, 0);
		BfProgress->reconcile_all = true;
		BfProgress->nslots = bf_max_workers;
	}
	progress_locks = GetNamedLWLockTranche(BF_PROGRESS_TRANCHE);
	LWLockRelease(AddinShmemInitLock);
}

/* Is there progress shared memory (the library was preloaded)? */
bool
bf_progress_exists(void)
{
	return BfProgress != NULL;
}

/* Number of workers with pending counts, 0 without shared memory. */
int
bf_progress_nslots(void)
{
	return BfProgress != NULL ? BfProgress->nslots : 0;
}

/* Remember that items finished uncounted: the launcher will rebuild. */
void
bf_progress_note_uncounted(void)
{
	if (BfProgress == NULL)
		return;
	LWLockAcquire(MainLock(), LW_EXCLUSIVE);
	BfProgress->uncounted = true;
	LWLockRelease(MainLock());
}

/* The rebuild flags: every open loop's counters must be rebuilt, uncounted. */
void
bf_progress_flags(bool *reconcile_all, bool *uncounted)
{
	*reconcile_all = true;
	*uncounted = false;
	if (BfProgress == NULL)
		return;
	LWLockAcquire(MainLock(), LW_SHARED);
	*reconcile_all = BfProgress->reconcile_all;
	*uncounted = BfProgress->uncounted;
	LWLockRelease(MainLock());
}

/*
 * Is a rebuild starting or running?  Read without the lock by a worker
 * that has just announced its counting (bf_pending_set_unlocked) and
 * issued a memory barrier; the launcher sets the flag, then issues a
 * barrier, then looks for announced workers.  One of the two sees the
 * other.
 */
bool
bf_progress_rebuilding(void)
{
	volatile BfProgressShared *p = BfProgress;

	return p->reconciling || p->reconcile_all;
}

/*
 * The launcher starts a rebuild: from now on workers count under the
 * reconcile lock.  Returns whether items had finished uncounted (the flag
 * is cleared: the rebuild covers them).
 */
bool
bf_progress_rebuild_begin(void)
{
	bool		was_uncounted;

	LWLockAcquire(MainLock(), LW_EXCLUSIVE);
	BfProgress->reconciling = true;
	was_uncounted = BfProgress->uncounted;
	BfProgress->uncounted = false;
	LWLockRelease(MainLock());
	pg_memory_barrier();
	return was_uncounted;
}

/*
 * The launcher's rebuild ended: all_done when it rebuilt every open loop;
 * restore_uncounted when it gave up and the uncounted items it took over
 * are still uncounted.
 */
void
bf_progress_rebuild_end(bool all_done, bool restore_uncounted)
{
	LWLockAcquire(MainLock(), LW_EXCLUSIVE);
	if (all_done)
		BfProgress->reconcile_all = false;
	if (restore_uncounted)
		BfProgress->uncounted = true;
	BfProgress->reconciling = false;
	LWLockRelease(MainLock());
}

/* Announce (or withdraw) that worker slotno counts without the lock. */
void
bf_pending_set_unlocked(int slotno, bool inflight)
{
	LWLockAcquire(PendingLock(slotno), LW_EXCLUSIVE);
	BfProgress->slots[slotno].unlocked_inflight = inflight;
	LWLockRelease(PendingLock(slotno));
}

/* Is some worker in a transaction that counts items without the lock? */
bool
bf_pending_any_unlocked(void)
{
	for (int s = 0; s < BfProgress->nslots; s++)
	{
		bool		inflight;

		LWLockAcquire(PendingLock(s), LW_SHARED);
		inflight = BfProgress->slots[s].unlocked_inflight;
		LWLockRelease(PendingLock(s));
		if (inflight)
			return true;
	}
	return false;
}

/* How much worker slotno has pending, and since when. */
void
bf_pending_state(int slotno, int *npending, int32 *items_pending,
				 TimestampTz *first_pending)
{
	BfPendingCounts *pc = &BfProgress->slots[slotno];

	LWLockAcquire(PendingLock(slotno), LW_SHARED);
	*npending = pc->npending;
	*items_pending = pc->items_pending;
	*first_pending = pc->first_pending;
	LWLockRelease(PendingLock(slotno));
}

/* Copy worker slotno's pending counts (BF_PENDING_LOOPS at most). */
int
bf_pending_copy(int slotno, BfCount *out)
{
	BfPendingCounts *pc = &BfProgress->slots[slotno];
	int			n;

	LWLockAcquire(PendingLock(slotno), LW_SHARED);
	n = pc->npending;
	memcpy(out, pc->pending, sizeof(BfCount) * n);
	LWLockRelease(PendingLock(slotno));
	return n;
}

/* At pre-commit: transaction xid is about to write these pending counts. */
void
bf_pending_flush_begin(int slotno, TransactionId xid,
					   const BfCount *flushed, int nflushed)
{
	BfPendingCounts *pc = &BfProgress->slots[slotno];

	LWLockAcquire(PendingLock(slotno), LW_EXCLUSIVE);
	pc->flush_xid = xid;
	pc->flush_applied = false;
	pc->nflushed = nflushed;
	memcpy(pc->flushed, flushed, sizeof(BfCount) * nflushed);
	LWLockRelease(PendingLock(slotno));
}

/*
 * At commit of worker slotno's transaction: what it wrote (flushed_now:
 * flushed[]) leaves pending, what came since stays; otherwise what it
 * counted (delta[], items) becomes pending.  *overflow is set when a loop
 * found no room.
 */
void
bf_pending_commit(int slotno, bool flushed_now,
				  const BfCount *flushed, int nflushed,
				  const BfCount *delta, int ndelta, int32 items,
				  TimestampTz now, bool *overflow)
{
	BfPendingCounts *pc = &BfProgress->slots[slotno];

	LWLockAcquire(PendingLock(slotno), LW_EXCLUSIVE);
	if (flushed_now)
	{
		int			keep = 0;

		for (int i = 0; i < pc->npending; i++)
		{
			BfCount    *c = &pc->pending[i];

			for (int j = 0; j < nflushed; j++)
			{
				if (flushed[j].loop_ref == c->loop_ref)
				{
					c->completed -= flushed[j].completed;
					c->failed -= flushed[j].failed;
					break;
				}
			}
			if (c->completed != 0 || c->failed != 0)
				pc->pending[keep++] = *c;
		}
		pc->npending = keep;
		pc->items_pending = 0;
		pc->first_pending = keep > 0 ? now : 0;
		pc->flush_applied = true;
	}
	else if (ndelta > 0)
	{
		if (pc->npending == 0)
			pc->first_pending = now;
		for (int i = 0; i < ndelta; i++)
			bf_count_add(pc->pending, &pc->npending, BF_PENDING_LOOPS,
						 delta[i].loop_ref, delta[i].completed,
						 delta[i].failed, overflow);
		pc->items_pending += items;
	}
	pc->unlocked_inflight = false;
	LWLockRelease(PendingLock(slotno));
}

/* At abort of worker slotno's transaction: it counted and wrote nothing. */
void
bf_pending_abort(int slotno, bool flushed_now)
{
	BfPendingCounts *pc = &BfProgress->slots[slotno];

	LWLockAcquire(PendingLock(slotno), LW_EXCLUSIVE);
	pc->unlocked_inflight = false;
	if (flushed_now)
		pc->flush_xid = InvalidTransactionId;
	LWLockRelease(PendingLock(slotno));
}

/*
 * Discard the pending counts of the given loops (all, for n < 0) of every
 * worker of this database (loop ids are per database).
 */
void
bf_pending_discard(const int64 *loops, int n)
{
	for (int s = 0; s < BfProgress->nslots; s++)
	{
		BfPendingCounts *pc = &BfProgress->slots[s];
		int			keep = 0;
		BfWorkerView w;

		if (bf_pool_read(s, &w) && w.dboid != MyDatabaseId)
			continue;

		LWLockAcquire(PendingLock(s), LW_EXCLUSIVE);
		for (int i = 0; i < pc->npending; i++)
		{
			bool		drop = n < 0;

			for (int j = 0; j < n && !drop; j++)
				drop = pc->pending[i].loop_ref == loops[j];
			if (!drop)
				pc->pending[keep++] = pc->pending[i];
		}
		pc->npending = keep;
		if (keep == 0)
		{
			pc->items_pending = 0;
			pc->first_pending = 0;
		}
		LWLockRelease(PendingLock(s));
	}
}

/*
 * The pending counts of worker slotno as the active snapshot should see
 * them, into counts[] (BF_PENDING_LOOPS * 2 entries); returns how many.
 *
 * When the worker's last write of its counts to the table committed after
 * the snapshot was taken but its commit callback already took them out of
 * pending, they are added back; when the snapshot sees that commit but the
 * callback has not run yet, they are taken out.  Either way the reader
 * counts them exactly once.
 */
int
bf_pending_for_snapshot(int slotno, BfCount *counts)
{
	BfPendingCounts *pc = &BfProgress->slots[slotno];
	BfCount		flushed[BF_PENDING_LOOPS];
	int			n;
	int			nflushed;
	TransactionId xid;
	bool		applied;
	bool		overflow = false;
	int			sign = 0;

	LWLockAcquire(PendingLock(slotno), LW_SHARED);
	n = pc->npending;
	memcpy(counts, pc->pending, sizeof(BfCount) * n);
	xid = pc->flush_xid;
	applied = pc->flush_applied;
	nflushed = pc->nflushed;
	memcpy(flushed, pc->flushed, sizeof(BfCount) * nflushed);
	LWLockRelease(PendingLock(slotno));

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

/* At pre-commit of a transaction that moves counts. */
void
bf_progress_move_begin(void)
{
	pg_atomic_fetch_add_u64(&BfProgress->moves_begun, 1);
}

/* Once shared memory reflects the move (or it aborted). */
void
bf_progress_move_done(void)
{
	pg_write_barrier();
	pg_atomic_fetch_add_u64(&BfProgress->moves_done, 1);
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
 * The tracked-loop entry of loop_ref (caller holds the main lock, in
 * exclusive mode with create).  With create, a missing entry takes a free
 * place or evicts the loop that committed least recently.
 */
static BfTrackedLoop *
bf_tracked_loop(int64 loop_ref, bool create)
{
	static int	hint = 0;		/* where this process found a loop last */
	BfTrackedLoop *victim = NULL;

	/* A worker mostly asks for the loop it asked for last: look there first. */
	if (BfProgress->loops[hint].loop_ref == loop_ref &&
		BfProgress->loops[hint].dboid == MyDatabaseId)
		return &BfProgress->loops[hint];
	for (int i = 0; i < BF_TRACKED_LOOPS; i++)
	{
		BfTrackedLoop *t = &BfProgress->loops[i];

		/* Loop ids are per database: so is the entry. */
		if (t->loop_ref == loop_ref && t->dboid == MyDatabaseId)
		{
			hint = i;
			return t;
		}
		if (victim == NULL ||
			(victim->loop_ref != 0 &&
			 (t->loop_ref == 0 || t->last_commit < victim->last_commit)))
			victim = t;
	}
	if (!create)
		return NULL;
	memset(victim, 0, sizeof(BfTrackedLoop));
	victim->loop_ref = loop_ref;
	victim->dboid = MyDatabaseId;
	hint = victim - BfProgress->loops;
	return victim;
}

/* Rate samples at a commit: items done per loop, one per BF_SAMPLE_MS at most. */
void
bf_rate_record(const BfCount *delta, int n, TimestampTz now)
{
	if (n <= 0 || BfProgress == NULL)
		return;
	LWLockAcquire(MainLock(), LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		BfTrackedLoop *t = bf_tracked_loop(delta[i].loop_ref, true);

		t->done += delta[i].completed + delta[i].failed;
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
	LWLockRelease(MainLock());
}

/* Is loop_ref due for a progress notification?  If so, note it as sent. */
bool
bf_rate_announce_due(int64 loop_ref, TimestampTz now, int interval_ms)
{
	BfTrackedLoop *t;
	bool		announce = false;

	LWLockAcquire(MainLock(), LW_EXCLUSIVE);
	t = bf_tracked_loop(loop_ref, true);
	if (TimestampDifferenceExceeds(t->last_notify, now, interval_ms))
	{
		t->last_notify = now;
		announce = true;
	}
	LWLockRelease(MainLock());
	return announce;
}

/*
 * Copy the ids of this database's loops with rate samples into
 * loops[BF_TRACKED_LOOPS].
 */
int
bf_rate_loops(int64 *loops)
{
	int			n = 0;

	if (BfProgress == NULL)
		return 0;
	LWLockAcquire(MainLock(), LW_SHARED);
	for (int i = 0; i < BF_TRACKED_LOOPS; i++)
		if (BfProgress->loops[i].loop_ref != 0 &&
			BfProgress->loops[i].dboid == MyDatabaseId)
			loops[n++] = BfProgress->loops[i].loop_ref;
	LWLockRelease(MainLock());
	return n;
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
 * it.  The samples are copied out under the lock and read outside it.
 */
bool
bf_progress_rate(int64 loop_ref, TimestampTz now, double *rate,
				 TimestampTz *last_commit)
{
	BfTrackedLoop *t;
	BfTrackedLoop copy;
	BfRateSample base;
	bool		found = false;
	TimestampTz window_start = TimestampTzPlusMilliseconds(now, -BF_RATE_WINDOW_MS);

	*rate = 0;
	*last_commit = 0;
	if (BfProgress == NULL)
		return false;

	LWLockAcquire(MainLock(), LW_SHARED);
	t = bf_tracked_loop(loop_ref, false);
	if (t != NULL && t->nsamples > 0)
	{
		copy = *t;
		found = true;
	}
	LWLockRelease(MainLock());
	if (!found)
		return false;

	{
		int			k = copy.head;

		base = copy.samples[k];
		for (int i = 1; i < copy.nsamples; i++)
		{
			k = (k - 1 + BF_RATE_SAMPLES) % BF_RATE_SAMPLES;
			if (copy.samples[k].at < window_start)
				break;
			base = copy.samples[k];
		}
	}

	*last_commit = copy.last_commit;
	if (!TimestampDifferenceExceeds(base.at, now, BF_RATE_MIN_SPAN_MS))
		return false;
	if (copy.done > base.done && copy.last_commit > base.at)
	{
		double		span = (double) (copy.last_commit - base.at);
		double		mean_gap = span / (double) (copy.done - base.done);
		double		idle = (double) (now - copy.last_commit);

		if (idle > mean_gap)
			span += idle - mean_gap;
		*rate = (double) (copy.done - base.done) / (span / (double) USECS_PER_SEC);
	}
	else
		*rate = (double) (copy.done - base.done) /
			((double) (now - base.at) / (double) USECS_PER_SEC);
	return true;
}
