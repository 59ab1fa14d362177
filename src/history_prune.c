/*-------------------------------------------------------------------------
 *
 * history_prune.c
 *	  The launcher prunes the items of runs that finished longer ago than
 *	  batchflow.history_retention.
 *
 *	  Pruning deletes, one run at a time and a small batch per
 *	  transaction, the item errors and then the items of finished runs,
 *	  and records the run in batchflow.pruned_run.  Runs, loops and their
 *	  final counts stay, so bf_progress still answers for them.  Workers
 *	  never touch a finished run's items; bf_retry of a run being pruned
 *	  waits for one batch at most.
 *
 * IDENTIFICATION
 *	  src/history_prune.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/timestamp.h"

#include "history_prune.h"
#include "progress.h"
#include "spi_util.h"

/* Items (or item errors) deleted per pruning transaction. */
#define BF_PRUNE_BATCH			500
/* Time the launcher spends pruning per sweep. */
#define BF_PRUNE_BUDGET_MS		200

/*
 * Delete the items of runs finished longer ago than the retention, a batch
 * per transaction, for at most BF_PRUNE_BUDGET_MS (called from bf_sweep,
 * outside a transaction, once the batchflow schema exists).
 */
void
bf_history_prune_sweep(void)
{
	TimestampTz start = GetCurrentTimestamp();
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];

	if (bf_history_retention_s <= 0)
		return;
	args[0] = Int32GetDatum(bf_history_retention_s);
	args[1] = Int32GetDatum(BF_PRUNE_BATCH);
	for (;;)
	{
		bool		isnull;
		int32		deleted;

		CHECK_FOR_INTERRUPTS();
		bf_txn_begin("batchflow: pruning history");
		if (SPI_execute_with_args("SELECT batchflow._prune_history(make_interval(secs => $1), $2)",
								  2, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not prune history");
		deleted = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
		bf_txn_end();
		if (isnull || deleted == 0 ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(), BF_PRUNE_BUDGET_MS))
			break;
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}
