/*-------------------------------------------------------------------------
 *
 * progress.h
 *	  Progress counting by the item workers (progress_count.c): its GUCs,
 *	  the one entry point that counts an attempt's outcome, and what the
 *	  readers (progress_view.c) and the counter rebuild
 *	  (counter_rebuild.c) need of the current transaction.
 *
 * IDENTIFICATION
 *	  src/progress.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_PROGRESS_H
#define BATCHFLOW_PROGRESS_H

#include "postgres.h"

#include "storage/lock.h"

#include "batchflow.h"
#include "claim.h"

/* GUC defaults and bounds */
#define BF_DEFAULT_PROGRESS_BATCH	10
#define BF_MAX_PROGRESS_BATCH		1000000
#define BF_DEFAULT_PROGRESS_MS		1000
#define BF_MAX_PROGRESS_MS			3600000
#define BF_DEFAULT_RETENTION_S		86400
#define BF_MAX_RETENTION_S			(INT_MAX / 2)
#define BF_DEFAULT_STALLED_S		300
#define BF_DEFAULT_SLOW_FACTOR		10.0

/* GUC variables (progress_count.c) */
extern bool bf_track_progress;
extern int	bf_progress_batch_items;
extern int	bf_progress_interval_ms;
extern int	bf_history_retention_s;

extern void bf_progress_define_gucs(void);
extern void bf_progress_lock_tag(LOCKTAG *tag);

/*
 * Count an attempt that bf_record_result recorded with this outcome, in
 * the same transaction.  Item workers call bf_progress_flush once per
 * transaction, inside SPI, before commit.
 */
extern void bf_progress_count(const BfClaim *claim, BfOutcome outcome);
extern void bf_progress_flush(void);

extern int	bf_progress_written_slot(void);
extern int32 bf_progress_shown_ended(int slotno, int32 idx, TimestampTz started_at);
extern void bf_progress_discard_on_commit(int64 *loops, int n);

#endif							/* BATCHFLOW_PROGRESS_H */
