/*-------------------------------------------------------------------------
 *
 * db_sweep.c
 *	  The sweep of one database, made by one of its item workers at a time
 *	  (databases.c decides whose turn it is), every poll interval.
 *
 *	  The sweep re-queues items that a worker which no longer exists left
 *	  'running', closes loops that have nothing left to execute (a crash
 *	  between an item's commit and the closing of its loop leaves one
 *	  open), rebuilds progress counters that cannot be trusted and prunes
 *	  history.  The first sweep of a database after its entry was made (the
 *	  server started, the extension was created, updated or restored
 *	  there, or the database had no worker for a while) is its recovery:
 *	  it runs before any worker there claims an item, re-queues every item
 *	  no live worker of the database holds, and rebuilds the counters of
 *	  every open loop.
 *
 * IDENTIFICATION
 *	  src/db_sweep.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "pgstat.h"
#include "utils/memutils.h"

#include "batchflow.h"
#include "counter_rebuild.h"
#include "db_sweep.h"
#include "history_prune.h"
#include "wake_commit.h"
#include "run.h"
#include "run_control.h"
#include "spi_util.h"

/*
 * Sweep this database (outside a transaction); recover: this is its first
 * visit.  Returns false if the extension is not installed here.
 */
bool
bf_db_sweep(bool recover)
{
	int64	   *ids = NULL;
	int			n = 0;
	MemoryContext cxt = CurrentMemoryContext;

	bf_txn_begin("batchflow: sweeping");
	if (!OidIsValid(get_namespace_oid("batchflow", true)))
	{
		bf_txn_end();
		pgstat_report_activity(STATE_IDLE, NULL);
		return false;
	}
	bf_requeue_orphans();
	ids = bf_loops_to_close(cxt, &n);
	bf_txn_end();

	for (int i = 0; i < n; i++)
	{
		bool		busy;

		bf_txn_begin("batchflow: closing loop");
		(void) bf_loop_try_close(ids[i], true, &busy);
		bf_txn_end();
	}
	if (recover || n > 0)
		bf_wake_workers();
	bf_counter_rebuild_sweep(recover);
	bf_history_prune_sweep();
	bf_run_retention_sweep();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return true;
}
