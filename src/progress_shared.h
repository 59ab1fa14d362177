/*-------------------------------------------------------------------------
 *
 * progress_shared.h
 *	  The progress subsystem's shared memory (progress_shared.c): per
 *	  worker, the counts of items whose transactions committed but that are
 *	  not yet written to batchflow.progress_counter ("pending counts");
 *	  per loop, a ring of (time, items done) samples for the recent rate;
 *	  and the flags of the counter rebuild.  Only progress_shared.c touches
 *	  the structure; callers pass and receive copies.
 *
 * IDENTIFICATION
 *	  src/progress_shared.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_PROGRESS_SHARED_H
#define BATCHFLOW_PROGRESS_SHARED_H

#include "postgres.h"

#include "datatype/timestamp.h"

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

/* Counts of items of one loop. */
typedef struct BfCount
{
	int64		loop_ref;
	int64		completed;
	int64		failed;
} BfCount;

extern void bf_count_add(BfCount *counts, int *n, int max, int64 loop_ref,
						 int64 completed, int64 failed, bool *overflow);

extern Size bf_progress_shmem_size(void);
extern void bf_progress_shmem_request(void);
extern void bf_progress_shmem_startup(void);
extern bool bf_progress_exists(void);
extern int	bf_progress_nslots(void);

/* Flags of the counter rebuild (counter_rebuild.c). */
extern void bf_progress_note_uncounted(void);
extern void bf_progress_flags(bool *reconcile_all, bool *uncounted);
extern bool bf_progress_rebuilding(void);
extern bool bf_progress_rebuild_begin(void);
extern void bf_progress_rebuild_end(bool all_done, bool restore_uncounted);

/* One worker's pending counts. */
extern void bf_pending_set_unlocked(int slotno, bool inflight);
extern bool bf_pending_any_unlocked(void);
extern void bf_pending_state(int slotno, int *npending, int32 *items_pending,
							 TimestampTz *first_pending);
extern int	bf_pending_copy(int slotno, BfCount *out);
extern void bf_pending_flush_begin(int slotno, TransactionId xid,
								   const BfCount *flushed, int nflushed);
extern void bf_pending_commit(int slotno, bool flushed_now,
							  const BfCount *flushed, int nflushed,
							  const BfCount *delta, int ndelta, int32 items,
							  TimestampTz now, bool *overflow);
extern void bf_pending_abort(int slotno, bool flushed_now);
extern void bf_pending_discard(const int64 *loops, int n);
extern int	bf_pending_for_snapshot(int slotno, BfCount *counts);

/* Counts moving between shared memory and the tables. */
extern void bf_progress_move_begin(void);
extern void bf_progress_move_done(void);
extern void bf_progress_moves_read(uint64 *begun, uint64 *done);

/* Per-loop rate samples. */
extern void bf_rate_record(const BfCount *delta, int n, TimestampTz now);
extern bool bf_rate_announce_due(int64 loop_ref, TimestampTz now, int interval_ms);
extern int	bf_rate_loops(int64 *loops);
extern bool bf_progress_rate(int64 loop_ref, TimestampTz now, double *rate,
							 TimestampTz *last_commit);

#endif							/* BATCHFLOW_PROGRESS_SHARED_H */
