/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: a background worker started by the postmaster,
 *	  connected to no database, that shares the pool of
 *	  batchflow.max_workers item workers out among the databases that have
 *	  the extension (every database, or the one batchflow.database_name
 *	  names).
 *
 *	  A background worker connects to one database for life, so each item
 *	  worker is started for one database, in a slot lent to that database
 *	  (databases.c decides which), and exits when it hands the slot back.
 *	  Item workers are dynamic background workers that never restart on
 *	  their own (BGW_NEVER_RESTART) and notify the launcher when they stop;
 *	  the launcher lends the slot again at once.  When no background worker
 *	  slot is free it says so with a warning and a hint, and tries again
 *	  later.  It wakes when work commits in a database that has no idle
 *	  worker, when a worker stops, and every poll interval.
 *
 *	  The sweeps after crashes (re-queueing interrupted items, closing
 *	  loops) are made in each database by its own workers (db_sweep.c).
 *
 * IDENTIFICATION
 *	  src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "batchflow.h"
#include "announce_sender.h"
#include "databases.h"
#include "launcher.h"
#include "pool.h"
#include "worker.h"

static volatile sig_atomic_t got_sigterm = false;

static void bf_launcher_sigterm(SIGNAL_ARGS);
static bool bf_start_worker(int slotno, Oid dboid, BackgroundWorkerHandle **handle);
static void bf_serve_databases(BackgroundWorkerHandle **handles, bool *alive,
							   BfStartOrder *orders);
static void bf_stop_pool(BackgroundWorkerHandle **handles);

/* Register the launcher with the postmaster (from _PG_init). */
void
bf_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "batchflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bf_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "batchflow launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "batchflow launcher");
	RegisterBackgroundWorker(&worker);
}

/* SIGTERM: leave the main loop, stop the pool, exit. */
static void
bf_launcher_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Start the item worker for slot slotno in database dboid; false if the
 * postmaster has no room.
 */
static bool
bf_start_worker(int slotno, Oid dboid, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "batchflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bf_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "batchflow worker %d", slotno);
	snprintf(worker.bgw_type, BGW_MAXLEN, "batchflow worker");
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * One round: see which workers are gone, let databases.c share the pool
 * out, and start the workers it orders.
 */
static void
bf_serve_databases(BackgroundWorkerHandle **handles, bool *alive,
				   BfStartOrder *orders)
{
	static bool warned = false;
	int			norders;

	for (int i = 0; i < bf_pool_nslots(); i++)
	{
		pid_t		pid;
		BfWorkerView w;

		if (handles[i] != NULL &&
			GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
		{
			pfree(handles[i]);
			handles[i] = NULL;
		}
		alive[i] = handles[i] != NULL;

		/* A worker of an earlier launcher may still serve this slot. */
		if (!alive[i] && bf_pool_read(i, &w) && kill(w.pid, 0) == 0)
			alive[i] = true;
	}

	norders = bf_db_balance(alive, orders, !bf_every_database());
	for (int k = 0; k < norders; k++)
	{
		int			slot = orders[k].slotno;

		if (bf_start_worker(slot, orders[k].dboid, &handles[slot]))
			continue;
		handles[slot] = NULL;
		bf_db_slot_released(slot);
		if (!warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("batchflow could not start item worker %d: no background worker slot is free", slot),
					 errdetail("batchflow.max_workers is %d; the launcher will keep trying.",
							   bf_max_workers),
					 errhint("Raise max_worker_processes (it must leave room for batchflow.max_workers + 1 and any other background workers) and restart the server.")));
		warned = true;
	}
}

/* Ask every worker of the pool to stop. */
static void
bf_stop_pool(BackgroundWorkerHandle **handles)
{
	for (int i = 0; i < bf_pool_nslots(); i++)
		if (handles[i] != NULL)
			TerminateBackgroundWorker(handles[i]);
}

/* Entry point of the launcher. */
void
bf_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle **handles;
	bool	   *alive;
	BfStartOrder *orders;
	MemoryContext round_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, bf_launcher_sigterm);
	BackgroundWorkerUnblockSignals();

	/* No database: the launcher reads only the shared catalogs. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("batchflow launcher");
	bf_db_set_launcher(MyLatch);

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * bf_pool_nslots());
	alive = MemoryContextAllocZero(TopMemoryContext, sizeof(bool) * bf_pool_nslots());
	orders = MemoryContextAllocZero(TopMemoryContext,
									sizeof(BfStartOrder) * bf_pool_nslots());
	round_cxt = AllocSetContextCreate(TopMemoryContext, "batchflow launcher round",
									  ALLOCSET_DEFAULT_SIZES);

	if (bf_every_database())
		ereport(LOG,
				(errmsg("batchflow launcher started: %d workers for every database with the extension",
						bf_max_workers)));
	else
		ereport(LOG,
				(errmsg("batchflow launcher started: %d workers for database \"%s\"",
						bf_max_workers, bf_database_name)));

	while (!got_sigterm)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextSwitchTo(round_cxt);
		PG_TRY();
		{
			bf_launcher_find_databases();
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(round_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(round_cxt);

		bf_serve_databases(handles, alive, orders);
		bf_announce_rescue();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 bf_poll_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	bf_stop_pool(handles);
	bf_db_set_launcher(NULL);
	ereport(LOG, (errmsg("batchflow launcher shutting down")));

	/*
	 * Exit code 1: if the server is not shutting down (someone terminated
	 * just the launcher), the postmaster starts it again after 5 seconds.
	 */
	proc_exit(1);
}
