/*-------------------------------------------------------------------------
 *
 * batchflow.h
 *	  The few declarations every part of batchflow shares: the settings of
 *	  the pool (batchflow.c) and the outcome of an attempt.  Each module
 *	  has its own header for the rest (pool.h, claim.h, progress.h, ...).
 *
 * IDENTIFICATION
 *	  src/batchflow.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_H
#define BATCHFLOW_H

#include "postgres.h"

/* GUC bounds, as named constants */
#define BF_DEFAULT_MAX_WORKERS		10
#define BF_MAX_MAX_WORKERS			256
#define BF_DEFAULT_MAX_CONCURRENCY	10
#define BF_MAX_MAX_CONCURRENCY		10000
#define BF_DEFAULT_POLL_MS			1000
#define BF_DEFAULT_BATCH_MS			2
#define BF_MAX_BATCH_ITEMS			100

/* GUC variables (batchflow.c) */
extern char *bf_database_name;
extern int	bf_max_workers;
extern int	bf_max_concurrency;
extern int	bf_poll_interval_ms;
extern int	bf_batch_ms;

/* What recording an attempt did to its item (item_result.c). */
typedef enum BfOutcome
{
	BF_OUTCOME_SUCCEEDED,
	BF_OUTCOME_WILL_RETRY,		/* failed; pending again for a later attempt */
	BF_OUTCOME_FAILED,			/* failed for good */
	BF_OUTCOME_CANCELLED		/* skipped: interrupted by a force cancel */
} BfOutcome;

#endif							/* BATCHFLOW_H */
