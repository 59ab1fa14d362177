/*-------------------------------------------------------------------------
 *
 * worker_warmup.c
 *	  A new item worker's rehearsal of a claim and a loop's close, in a
 *	  transaction it rolls back, so that its first real ones run warm.
 *
 *	  A worker process that has never claimed or closed pays on its first
 *	  real claim and close for what PostgreSQL keeps per backend: the
 *	  relation and catalog caches of the tables involved, the first
 *	  execution of each kept plan, and the compilation and statement plans
 *	  of the PL/pgSQL triggers a close fires on the loop and run rows.
 *	  Measured in this tree: a loop's first close by a worker took 16-20 ms
 *	  against 5 ms for the next ones, and its first claim about 1.5 ms more
 *	  than later ones; with 10 fresh workers starting a 10-wide loop on two
 *	  cores, that delays the cap-th item by several milliseconds, and a
 *	  fresh closer delays its run's end by the rest.  So at its first quiet
 *	  moment (a look that found no loop with work left: never before a
 *	  claim a worker was started for, nor while runs could use the CPU;
 *	  normally right after it starts) a worker rehearses both, once per
 *	  process.
 *
 *	  The rehearsal inserts a workflow of one parallel loop, its version, a
 *	  run and the run's open loop, without items, all with ids no sequence
 *	  hands out (minus the worker's pid) and a workflow name of this
 *	  process's own; runs the claim statements and loads the loop's
 *	  description against it; closes it through bf_close_loop as a worker
 *	  does after a loop's last item (which ends the run); and rolls
 *	  everything back.  Nothing of it is seen by anyone: the rows, the
 *	  notifications, the metric counts and the wake-ups asked for at commit
 *	  all go with the rollback, no sequence moves, and no row of anyone
 *	  else's is locked.  A rehearsal that fails (a statement raised an
 *	  error) is reported at DEBUG1 and not tried again: it only costs the
 *	  warmth.
 *
 * IDENTIFICATION
 *	  src/worker_warmup.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batchflow.h"
#include "claim.h"
#include "loop_close.h"
#include "loopcache.h"
#include "spi_util.h"
#include "worker_warmup.h"

static void bf_rehearse(int64 id);

/*
 * Insert the throwaway workflow, version, run and loop with id "id" (inside
 * SPI), claim from the loop, describe it and close it.
 */
static void
bf_rehearse(int64 id)
{
	static const Oid argtypes[2] = {INT8OID, OIDOID};
	Datum		args[2] = {Int64GetDatum(id), ObjectIdGetDatum(GetUserId())};
	bool		busy;

	/*
	 * A workflow of one parallel loop of SQL items, its version, a run at
	 * that loop and the loop, without items: it closes at once and ends the
	 * run.  The name is this process's own, so rehearsals never meet.
	 */
	if (SPI_execute_with_args(
							  "WITH n AS (SELECT jsonb_build_object('id', 'each', 'type', 'loop', 'loopType', 'parallel',"
							  "                                     'concurrency', 1,"
							  "                                     'inputSource', jsonb_build_object('variable', 'items'),"
							  "                                     'children', jsonb_build_array(jsonb_build_object("
							  "                                        'id', 'act', 'type', 'activity', 'activity', 'sql',"
							  "                                        'sql', 'SELECT 1'))) AS node),"
							  "     w AS (INSERT INTO batchflow.workflow (name, owner)"
							  "           VALUES ('_rehearsal.' || -$1, $2) RETURNING name),"
							  "     v AS (INSERT INTO batchflow.workflow_version (id, workflow, version, definition, owner)"
							  "           SELECT $1::int, w.name, 1, jsonb_build_object('nodes', jsonb_build_array(n.node)), $2"
							  "             FROM w, n RETURNING id),"
							  "     r AS (INSERT INTO batchflow.run (id, version_id, owner)"
							  "           SELECT $1, v.id, $2 FROM v RETURNING id)"
							  " INSERT INTO batchflow.loop (id, run_id, node_index, node_id, kind, node,"
							  "                             sequential, concurrency, total)"
							  " SELECT $1, r.id, 0, 'each', 'loop', n.node, false, 1, 0 FROM r, n",
							  2, (Oid *) argtypes, args, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_processed != 1)
		elog(ERROR, "could not insert the rehearsal's loop");

	bf_claim_rehearse(id);
	(void) bf_loop_info(id);
	bf_loop_info_forget(id);
	(void) bf_close_loop(id, false, &busy);
}

/*
 * Rehearse once, outside any transaction; true when done (or failed: not
 * worth a second try), false when the extension is not there.  Call only
 * where the worker would otherwise go to sleep.
 */
bool
bf_worker_warm_up(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool done = true;
	volatile bool failed = false;

	PG_TRY();
	{
		bf_txn_begin("batchflow: warming up");
		if (OidIsValid(get_namespace_oid("batchflow", true)))
			bf_rehearse(-(int64) MyProcPid);
		else
			done = false;
		SPI_finish();
		PopActiveSnapshot();
		AbortCurrentTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		bf_loop_info_forget(-(int64) MyProcPid);
		ereport(DEBUG1,
				(errmsg("batchflow worker skipped its warm-up: %s", edata->message)));
		FreeErrorData(edata);
		failed = true;
	}
	PG_END_TRY();
	if (done && !failed)
		elog(DEBUG1, "batchflow worker warmed up");
	return done;
}
