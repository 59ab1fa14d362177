/*-------------------------------------------------------------------------
 *
 * progress.h
 *	  Private declarations of the progress subsystem (progress.c,
 *	  progress_view.c, history.c): its GUCs and its shared memory.
 *
 *	  Shared memory holds two things.  Per item worker slot, the counts of
 *	  items whose transactions committed but that are not yet written to
 *	  batchflow.progress_counter ("pending"): kept here rather than in the
 *	  worker's own memory so that a worker that exits leaves them to the
 *	  next worker of its slot, and so that the launcher can discard them
 *	  when it rebuilds the counters.  Per loop, a ring of (time, items
 *	  done) samples taken at commit, from which the views compute a
 *	  recent-window rate.
 *
 * IDENTIFICATION
 *	  src/progress.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_PROGRESS_H
#define BATCHFLOW_PROGRESS_H

#include "batchflow.h"

#include "storage/lock.h"

/* GUC defaults and bounds */
#define BF_DEFAULT_PROGRESS_BATCH	10
#define BF_MAX_PROGRESS_BATCH		1000000
#define BF_DEFAULT_PROGRESS_MS		1000
#define BF_MAX_PROGRESS_MS			3600000
#define BF_DEFAULT_RETENTION_S		86400
#define BF_MAX_RETENTION_S			(INT_MAX / 2)
#define BF_DEFAULT_STALLED_S		300
#define BF_DEFAULT_SLOW_FACTOR		10.0

/* Loops one worker may have pending counts for at once. */
#define BF_PENDING_LOOPS			16
/* Loops whose rate is followed at once; the least recently active is evicted. */
#define BF_TRACKED_LOOPS			128
/* Rate samples: one every BF_SAMPLE_MS at most, BF_RATE_SAMPLES kept. */
#define BF_RATE_SAMPLES				64
#define BF_SAMPLE_MS				200
/* The rate is measured over the last BF_RATE_WINDOW_MS. */
#define BF_RATE_WINDOW_MS			10000
/* A rate needs at least this much time behind it to be shown. */
#define BF_RATE_MIN_SPAN_MS			250

/* GUC variables (progress.c) */
extern bool bf_track_progress;
extern int	bf_progress_batch_items;
extern int	bf_progress_interval_ms;
extern int	bf_history_retention_s;
extern int	bf_stalled_after_s;
extern double bf_slow_item_factor;

/* Counts of items of one loop. */
typedef struct BfCount
{
	int64		loop_ref;
	int64		completed;
	int64		failed;
} BfCount;

/* One worker slot's counts waiting to be written. */
typedef struct BfProgressSlot
{
	slock_t		mutex;
	bool		unlocked_inflight;	/* in a transaction that counts items
									 * without the reconcile lock */
	int			npending;
	int32		items_pending;	/* items counted since the last write */
	TimestampTz first_pending;	/* commit time of the oldest pending item */
	BfCount		pending[BF_PENDING_LOOPS];

	/*
	 * The last transaction that wrote this slot's pending counts to the
	 * table, and what it moved: between its commit becoming visible and
	 * its commit callback, the counts are both in the table and pending;
	 * after, a reader whose snapshot predates the commit finds them in
	 * neither.  Readers use this to correct what they read (see
	 * bf_progress_slot_pending).
	 */
	TransactionId flush_xid;	/* invalid: none, or it aborted */
	bool		flush_applied;	/* committed, and subtracted from pending */
	int			nflushed;
	BfCount		flushed[BF_PENDING_LOOPS];
} BfProgressSlot;

typedef struct BfRateSample
{
	TimestampTz at;
	uint64		done;
} BfRateSample;

/* The rate samples of one loop. */
typedef struct BfTrackedLoop
{
	int64		loop_ref;		/* 0: free */
	uint64		done;			/* items finished since tracked */
	TimestampTz last_commit;
	TimestampTz last_notify;
	int			nsamples;
	int			head;			/* index of the newest sample */
	BfRateSample samples[BF_RATE_SAMPLES];
} BfTrackedLoop;

typedef struct BfProgressShared
{
	slock_t		mutex;			/* protects loops[] and the flags */
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
	BfProgressSlot slots[FLEXIBLE_ARRAY_MEMBER];
} BfProgressShared;

extern BfProgressShared *BfProgress;

/* progress.c */
extern void bf_progress_lock_tag(LOCKTAG *tag);
extern void bf_progress_discard_pending(const int64 *loops, int n);
extern void bf_progress_discard_on_commit(int64 *loops, int n);
extern bool bf_progress_rate(int64 loop_ref, TimestampTz now, double *rate,
							 TimestampTz *last_commit);
extern int	bf_progress_written_slot(void);
extern void bf_progress_moves_read(uint64 *begun, uint64 *done);
extern int	bf_progress_slot_pending(int slotno, BfCount *counts);
extern void bf_progress_item_ended(BfClaim *claim);
extern int32 bf_progress_shown_ended(int slotno, int32 idx, TimestampTz started_at);

#endif							/* BATCHFLOW_PROGRESS_H */
