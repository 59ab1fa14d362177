/*-------------------------------------------------------------------------
 *
 * deps_ready.c
 *	  dependsOn: the readiness bookkeeping when an item ends, in the
 *	  ending item's own transaction (inside SPI).
 *
 *	  bf_deps_item_succeeded: the item's ready row goes; the wait rows of
 *	  its dependents count down, locked in index order (so two items
 *	  finishing at once that share dependents cannot deadlock), and each
 *	  dependent whose last dependency it was gets a ready row, claimable
 *	  exactly when that commit becomes visible; as many idle workers as
 *	  items became ready are woken at commit, and this worker's claim hint
 *	  is lowered to the lowest of them.  bf_deps_item_failed: every
 *	  pending transitive dependent ends skipped with an error that names
 *	  the failed dependency, and the loop's progress is marked for a
 *	  recount.  batchflow._deps_item_ended does the same for an item that
 *	  ended outside a worker's record (a workflow activity's item).
 *
 *	  The graph these rows come from (item_dep, item_wait, item_ready) is
 *	  checked and written once at loop start (deps.c); the claim reads
 *	  item_ready (deps_claim.c).
 *
 * IDENTIFICATION
 *	  src/deps_ready.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"

#include "batchflow.h"
#include "claim_hint.h"
#include "deps.h"
#include "spi_util.h"
#include "wake_commit.h"

PG_FUNCTION_INFO_V1(bf_deps_item_ended);

static SPIPlanPtr succeeded_plan = NULL;
static SPIPlanPtr failed_plan = NULL;
static SPIPlanPtr recount_plan = NULL;

static void deps_released(int64 loop_ref);

/*
 * The item (loop_ref, idx) just succeeded, in this transaction (inside
 * SPI): it is no longer ready; its dependents with a count count down,
 * locked in index order; each dependent for which it was the last
 * dependency becomes ready.  The workers are woken at commit for them.
 */
void
bf_deps_item_succeeded(int64 loop_ref, int32 idx)
{
	Datum		args[2];
	int			nest;

	if (succeeded_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INT4OID};

		bf_keep_plan(&succeeded_plan, "WITH gone AS ("
										"    DELETE FROM batchflow.item_ready"
										"     WHERE loop_ref = $1 AND idx = $2),"
										" d AS ("
										"    SELECT e.idx, e.run_id FROM batchflow.item_dep e"
										"     WHERE e.loop_ref = $1 AND e.dep_idx = $2),"
										" w AS ("
										"    SELECT x.idx FROM batchflow.item_wait x"
										"     WHERE x.loop_ref = $1 AND x.idx IN (SELECT d.idx FROM d)"
										"     ORDER BY x.idx FOR UPDATE),"
										" counted AS ("
										"    UPDATE batchflow.item_wait y SET unmet = y.unmet - 1"
										"      FROM w WHERE y.loop_ref = $1 AND y.idx = w.idx AND y.unmet > 0"
										"    RETURNING y.idx, y.unmet)"
										" INSERT INTO batchflow.item_ready (loop_ref, idx, run_id)"
										" SELECT $1, d.idx, d.run_id FROM d"
										"  WHERE NOT EXISTS (SELECT 1 FROM w WHERE w.idx = d.idx)"
										"     OR EXISTS (SELECT 1 FROM counted c WHERE c.idx = d.idx AND c.unmet = 0)"
										" ON CONFLICT (loop_ref, idx) DO NOTHING"
										" RETURNING idx", 2, types);
	}
	args[0] = Int64GetDatum(loop_ref);
	args[1] = Int32GetDatum(idx);
	nest = bf_deps_plan_guard_begin();
	if (SPI_execute_plan(succeeded_plan, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not release the dependents of item %d of loop " INT64_FORMAT,
			 idx, loop_ref);
	bf_planner_off_end(nest);
	deps_released(loop_ref);
}

/*
 * The rows (idx) of the items a release made ready: they may find workers
 * asleep, which nothing else would wake before their poll interval, so
 * wake as many idle workers as items became ready, at commit; this
 * worker's next claim starts at the lowest of them.
 */
static void
deps_released(int64 loop_ref)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		bf_claim_hint_lower(loop_ref,
							DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 1, &isnull)));
	}
	if (SPI_processed > 0)
		bf_wake_workers_on_commit((int) Min(SPI_processed, (uint64) INT_MAX));
}

/*
 * The item (loop_ref, idx) just failed for good, in this transaction
 * (inside SPI): it is no longer ready, and its pending dependents, and
 * theirs, end skipped with an error that names it.  Returns how many were skipped.
 */
int64
bf_deps_item_failed(int64 loop_ref, int32 idx)
{
	Datum		args[2];
	int64		skipped;
	int			nest;

	if (failed_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INT4OID};

		bf_keep_plan(&failed_plan, "WITH RECURSIVE down(idx) AS ("
									 "    SELECT d.idx FROM batchflow.item_dep d"
									 "     WHERE d.loop_ref = $1 AND d.dep_idx = $2"
									 "  UNION"
									 "    SELECT d.idx FROM down JOIN batchflow.item_dep d"
									 "        ON d.loop_ref = $1 AND d.dep_idx = down.idx),"
									 " gone AS ("
									 "    DELETE FROM batchflow.item_ready"
									 "     WHERE loop_ref = $1 AND idx = $2),"
									 " failed AS ("
									 "    SELECT format('dependency \"%s\" failed',"
									 "                  f.item ->> (l.node #>> '{dependsOn,key}')) AS error"
									 "      FROM batchflow.item f JOIN batchflow.loop l ON l.id = f.loop_ref"
									 "     WHERE f.loop_ref = $1 AND f.idx = $2)"
									 " UPDATE batchflow.item i"
									 "    SET status = 'skipped', finished_at = clock_timestamp(),"
									 "        not_before = NULL, error = failed.error"
									 "   FROM failed,"
									 "        (SELECT x.idx FROM batchflow.item x"
									 "          WHERE x.loop_ref = $1 AND x.status = 'pending'"
									 "            AND x.idx IN (SELECT idx FROM down)"
									 "          ORDER BY x.idx FOR UPDATE) s"
									 "  WHERE i.loop_ref = $1 AND i.idx = s.idx", 2, types);
		bf_keep_plan(&recount_plan, "UPDATE batchflow.loop_progress"
									  "   SET state = 'recount', updated_at = clock_timestamp()"
									  " WHERE loop_ref = $1 AND state = 'live'", 1, types);
	}
	args[0] = Int64GetDatum(loop_ref);
	args[1] = Int32GetDatum(idx);
	nest = bf_deps_plan_guard_begin();
	if (SPI_execute_plan(failed_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not skip the dependents of item %d of loop " INT64_FORMAT,
			 idx, loop_ref);
	skipped = (int64) SPI_processed;
	bf_planner_off_end(nest);

	/*
	 * The batched counters count what workers execute; these items were
	 * not executed.  Until the launcher rebuilds the loop's counters, the
	 * progress views count its items directly.
	 */
	if (skipped > 0 &&
		SPI_execute_plan(recount_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not mark the progress of loop " INT64_FORMAT " for a recount",
			 loop_ref);
	return skipped;
}

/*
 * batchflow._deps_item_ended(loop bigint, idx int, succeeded boolean)
 *
 * The same bookkeeping for an item that ended outside a worker's record
 * (a workflow activity's item, completed when its child run ends).
 */
Datum
bf_deps_item_ended(PG_FUNCTION_ARGS)
{
	int64		loop_ref = PG_GETARG_INT64(0);
	int32		idx = PG_GETARG_INT32(1);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (PG_GETARG_BOOL(2))
		bf_deps_item_succeeded(loop_ref, idx);
	else
		(void) bf_deps_item_failed(loop_ref, idx);
	SPI_finish();
	PG_RETURN_VOID();
}
