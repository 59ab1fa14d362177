/*-------------------------------------------------------------------------
 *
 * run_limits.c
 *	  Resource limits on what a run may hold: batchflow.max_items_per_run
 *	  and batchflow.max_item_size, checked by bf_advance (loop_start.c)
 *	  when a run reaches a loop.
 *
 * IDENTIFICATION
 *	  src/run_limits.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "run_limits.h"

/* Checked by bf_advance (loop_start.c). */
int			bf_max_items_per_run = BF_DEFAULT_MAX_ITEMS_PER_RUN;
int			bf_max_item_kb = BF_DEFAULT_MAX_ITEM_KB;

/*
 * The limits on what a run may hold.  Superuser-only, so that a role cannot
 * raise its own limits; bf_advance checks them when a run reaches a loop.
 */
void
bf_limits_define_gucs(void)
{
	DefineCustomIntVariable("batchflow.max_items_per_run",
							"Largest number of items one run may create, over all its loops.",
							"Checked when a loop is reached and its input array is resolved.",
							&bf_max_items_per_run,
							BF_DEFAULT_MAX_ITEMS_PER_RUN, 1, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("batchflow.max_item_size",
							"Largest single item a loop accepts.",
							"Measured as the item's jsonb size; every item is passed to each activity as a parameter.",
							&bf_max_item_kb,
							BF_DEFAULT_MAX_ITEM_KB, 1, BF_MAX_MAX_ITEM_KB,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
}

