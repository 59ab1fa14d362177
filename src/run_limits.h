/*-------------------------------------------------------------------------
 *
 * run_limits.h
 *	  Resource limits on what a run may hold: items per run and item size
 *	  (run_limits.c).
 *
 * IDENTIFICATION
 *	  src/run_limits.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_RUN_LIMITS_H
#define BATCHFLOW_RUN_LIMITS_H

#include "postgres.h"

#define BF_DEFAULT_MAX_ITEMS_PER_RUN	10000000
#define BF_DEFAULT_MAX_ITEM_KB		(16 * 1024)
#define BF_MAX_MAX_ITEM_KB			(256 * 1024 - 1)	/* jsonb's own limit */

extern int	bf_max_items_per_run;
extern int	bf_max_item_kb;

extern void bf_limits_define_gucs(void);

#endif							/* BATCHFLOW_RUN_LIMITS_H */
