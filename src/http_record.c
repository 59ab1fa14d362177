/*-------------------------------------------------------------------------
 *
 * http_record.c
 *	  Recording the successes of one HTTP round (http_batch.c) in one
 *	  statement instead of one UPDATE per item.
 *
 *	  Only plain successes come here: the item's last child ended well, in a
 *	  loop that is neither a top-level activity (whose output goes to the
 *	  run) nor a dependsOn loop (whose dependants are made ready): the row
 *	  change is then exactly bf_record_result's, for many rows at once, and
 *	  each item is counted (bf_progress_count) the same way.  Failures,
 *	  retries and cancellations go through bf_record_result one by one.
 *
 *	  The statement runs in the round's transaction: if it fails, the whole
 *	  round rolls back and its items are put back to pending and executed
 *	  again (bf_http_abandon, bf_http_requeue_mine): none is lost, none is
 *	  recorded twice, and their requests are repeated (at-least-once).
 *	  Item data (outputs) are passed as array parameters, never in the text.
 *
 * IDENTIFICATION
 *	  src/http_record.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

#include "batchflow.h"
#include "http_record.h"
#include "progress.h"
#include "spi_util.h"

static SPIPlanPtr success_plan = NULL;

/* Build a one-dimensional array of n Datums of type elemtype. */
static ArrayType *
bf_http_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return construct_md_array(values, nulls, 1, dims, lbs, elemtype,
							  typlen, typbyval, typalign);
}

/*
 * Record claims[0..n-1] (items of one loop) as succeeded, with outputs[i]
 * (jsonb, or SQL NULL where isnull[i]) as their output, in one statement
 * (inside SPI, in the round's transaction), and count each.
 */
void
bf_http_record_successes(BfLoopInfo *loop, BfClaim *const *claims,
						 Datum *outputs, bool *isnull, int n)
{
	Datum		args[4];
	Datum	   *idx;
	Datum	   *started;
	int			rc;

	static const Oid types[4] = {INT8OID, INT4ARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID};

	/*
	 * Each row is found by its key, whatever the join order: the plan reads
	 * the item side through "idx = ANY ($2)" on item_pkey.  Joined on
	 * i.idx = u.idx alone, the planner (statistics from when the table was
	 * small) scanned every item of the loop for each round.  Sequential and
	 * bitmap scans are off for the same reason (a bitmap scan of the loop's
	 * key range, filtered by "idx = ANY", was seen too).
	 */
	static const char *const no_scan_all[2] = {"enable_seqscan", "enable_bitmapscan"};

	if (n == 0)
		return;
	bf_keep_plan(&success_plan,
				 "UPDATE batchflow.item i"
				 "   SET status = 'succeeded', attempts = i.attempts + 1, worker_pid = NULL,"
				 "       started_at = u.started_at, finished_at = clock_timestamp(),"
				 "       output = u.output, error = NULL, not_before = NULL"
				 "  FROM unnest($2, $3, $4) AS u(idx, started_at, output)"
				 " WHERE i.loop_ref = $1 AND i.idx = ANY ($2) AND i.idx = u.idx", 4, types);

	idx = palloc(sizeof(Datum) * n);
	started = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		idx[i] = Int32GetDatum(claims[i]->idx);
		started[i] = TimestampTzGetDatum(claims[i]->started_at);
	}
	args[0] = Int64GetDatum(loop->loop_ref);
	args[1] = PointerGetDatum(bf_http_array(idx, NULL, n, INT4OID));
	args[2] = PointerGetDatum(bf_http_array(started, NULL, n, TIMESTAMPTZOID));
	args[3] = PointerGetDatum(bf_http_array(outputs, isnull, n, JSONBOID));

	rc = bf_execute_plan_without(success_plan, args, NULL, no_scan_all, 2);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not record %d HTTP items of loop " INT64_FORMAT, n, loop->loop_ref);
	if (SPI_processed != (uint64) n)
		elog(ERROR, "recorded " UINT64_FORMAT " of %d HTTP items of loop " INT64_FORMAT,
			 SPI_processed, n, loop->loop_ref);
	for (int i = 0; i < n; i++)
		bf_progress_count(claims[i], BF_OUTCOME_SUCCEEDED);
	pfree(idx);
	pfree(started);
}
