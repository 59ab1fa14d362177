/*-------------------------------------------------------------------------
 *
 * short_items.c
 *	  Batching short items: claiming the next item of the loop a worker
 *	  already holds a cap lock of, into the same transaction.
 *
 *	  A worker that finished an item quickly (within batchflow.batch_time)
 *	  keeps its cap lock and takes the loop's next pending item, so that tiny
 *	  items share one commit.  Every item still records its own result,
 *	  and the cap still holds: the worker executes one item at a time under
 *	  the one cap lock it holds.
 *
 *	  The scan starts at the index the worker claimed last: the entries
 *	  below it are almost all of finished items, and walking over them for
 *	  every item would make a long loop quadratic.
 *
 * IDENTIFICATION
 *	  src/short_items.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "short_items.h"
#include "deps.h"
#include "run_control.h"
#include "spi_util.h"
#include "bigbatch.h"

static SPIPlanPtr more_plan = NULL;

/*
 * Claim the next item of claim->loop for the current transaction (inside
 * SPI).  False when the loop has no item ready, has been stopped meanwhile,
 * or (sequential) its next index is not ready.
 */
bool
bf_claim_short_next(BfClaim *claim)
{
	Datum		args[2];
	HeapTuple	it;
	TupleDesc	id;
	bool		isnull;
	int32		idx;
	TimestampTz due;

	static const Oid types[2] = {INT8OID, INT4OID};

	bf_keep_plan(&more_plan,
				 "SELECT idx, item, attempts FROM batchflow.item"
				 " WHERE loop_ref = $1 AND idx > $2 AND status = 'pending'"
				 "   AND (not_before IS NULL OR not_before <= clock_timestamp())"
				 "   AND EXISTS (SELECT 1 FROM batchflow.loop l"
				 "                WHERE l.id = $1 AND l.status = 'running'"
				 "                  AND NOT " BF_RUN_PAUSED("l.run_id") ")"
				 " ORDER BY idx LIMIT 1"
				 " FOR UPDATE SKIP LOCKED", 2, types);

	/* A throttled loop's next start must wait: end the batch (throttle.c). */
	if (!bf_throttle_admit(claim->loop->loop_ref, GetCurrentTimestamp(), &due))
		return false;

	args[0] = Int64GetDatum(claim->loop->loop_ref);
	args[1] = Int32GetDatum(claim->idx);
	/* dependsOn: the next ready item (deps_claim.c), if the run goes on. */
	if (claim->loop->has_deps)
		(void) bf_deps_claim_ready(claim->loop->loop_ref, claim->idx + 1, true);
	else if (SPI_execute_plan(more_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not claim an item of loop " INT64_FORMAT,
			 claim->loop->loop_ref);
	if (SPI_processed == 0)
	{
		bf_throttle_refund(claim->loop->loop_ref);
		return false;
	}

	it = SPI_tuptable->vals[0];
	id = SPI_tuptable->tupdesc;
	idx = DatumGetInt32(SPI_getbinval(it, id, 1, &isnull));
	if (claim->loop->sequential && idx != claim->idx + 1)
	{
		bf_throttle_refund(claim->loop->loop_ref);
		return false;			/* strict order: the next index only */
	}
	claim->idx = idx;
	claim->item = SPI_getbinval(it, id, 2, &claim->item_isnull);
	claim->attempts = DatumGetInt32(SPI_getbinval(it, id, 3, &isnull));
	claim->started_at = GetCurrentTimestamp();
	return true;
}
