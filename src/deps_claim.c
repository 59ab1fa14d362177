/*-------------------------------------------------------------------------
 *
 * deps_claim.c
 *	  Claiming the next ready item of a dependsOn loop, and the plans of
 *	  the dependency bookkeeping (deps.c) made independent of statistics.
 *
 *	  Ready items are the rows of batchflow.item_ready (part 25), read in
 *	  index order from a starting index; each is then locked in
 *	  batchflow.item by its key, if it is still pending and not waiting for
 *	  a retry backoff (FOR UPDATE SKIP LOCKED).  Two statements, each on one
 *	  table, rather than a join: the planner, working from the statistics
 *	  of a table that was small when last analysed (every new graph), chose
 *	  join plans that probed every item of the loop for each ready row, and
 *	  a claim in a 100,000-item tree took minutes.
 *
 *	  For the same reason the statements of dependsOn loops are planned
 *	  with sequential scans, bitmap scans, sorts, hash and merge joins
 *	  disabled (bf_deps_plan_guard_begin over spi_util.c's
 *	  bf_planner_off_begin/end): what is left is the index scan on the
 *	  keys every one of them is written for, whatever the statistics say.
 *
 * IDENTIFICATION
 *	  src/deps_claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/guc.h"

#include "batchflow.h"
#include "deps.h"
#include "run_control.h"
#include "spi_util.h"

/* Ready rows read at a time. */
#define BF_READY_BATCH 16

static const char *const guarded_plans[] = {
	"enable_seqscan", "enable_bitmapscan", "enable_sort", "enable_hashjoin",
	"enable_mergejoin"
};

/*
 * Plan with index scans only until bf_planner_off_end; returns the GUC
 * nesting level to end.
 */
int
bf_deps_plan_guard_begin(void)
{
	return bf_planner_off_begin(guarded_plans, lengthof(guarded_plans));
}

/*
 * Lock the first claimable ready item of loop_ref with an index of at
 * least from (inside SPI).  True when one was found: SPI_tuptable's first
 * row is then its (idx, item, attempts) and its row is locked until the
 * transaction ends.  With check_loop, nothing is claimed unless the loop
 * is running and its run is not paused (short-item batching, whose
 * transaction began before a cancel or a pause may have committed).
 */
bool
bf_deps_claim_ready(int64 loop_ref, int32 from, bool check_loop)
{
	static SPIPlanPtr ready_plan = NULL;
	static SPIPlanPtr ready_checked_plan = NULL;
	static SPIPlanPtr take_plan = NULL;
	Datum		args[3];
	bool		found = false;
	int			nest;

	if (ready_plan == NULL)
	{
		static const Oid types[3] = {INT8OID, INT4OID, INT4OID};

		bf_keep_plan(&ready_plan, "SELECT idx FROM batchflow.item_ready"
					 " WHERE loop_ref = $1 AND idx >= $2"
					 " ORDER BY idx LIMIT $3", 3, types);
		/* The same, once the loop is found running and its run not paused. */
		bf_keep_plan(&ready_checked_plan, "SELECT idx FROM batchflow.item_ready"
					 " WHERE loop_ref = $1 AND idx >= $2"
					 "   AND EXISTS (SELECT 1 FROM batchflow.loop l"
					 "                WHERE l.id = $1 AND l.status = 'running'"
					 "                  AND NOT " BF_RUN_PAUSED("l.run_id") ")"
					 " ORDER BY idx LIMIT $3", 3, types);
		bf_keep_plan(&take_plan, "SELECT idx, item, attempts FROM batchflow.item"
					 " WHERE loop_ref = $1 AND idx = $2 AND status = 'pending'"
					 "   AND (not_before IS NULL OR not_before <= clock_timestamp())"
					 " FOR UPDATE SKIP LOCKED", 2, types);
	}

	args[0] = Int64GetDatum(loop_ref);
	nest = bf_deps_plan_guard_begin();
	for (;;)
	{
		int32		idxs[BF_READY_BATCH];
		int			n;

		args[1] = Int32GetDatum(from);
		args[2] = Int32GetDatum(BF_READY_BATCH);
		if (SPI_execute_plan(check_loop ? ready_checked_plan : ready_plan,
							 args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the ready items of loop " INT64_FORMAT, loop_ref);
		n = (int) SPI_processed;
		for (int i = 0; i < n; i++)
		{
			bool		isnull;

			idxs[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
												  SPI_tuptable->tupdesc, 1, &isnull));
		}
		for (int i = 0; i < n && !found; i++)
		{
			args[1] = Int32GetDatum(idxs[i]);
			if (SPI_execute_plan(take_plan, args, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "could not claim an item of loop " INT64_FORMAT, loop_ref);
			found = SPI_processed == 1;
		}
		if (found || n < BF_READY_BATCH)
			break;
		from = idxs[n - 1] + 1;
	}
	bf_planner_off_end(nest);
	if (!found)
		SPI_processed = 0;
	return found;
}
