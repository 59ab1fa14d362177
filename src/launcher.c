/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: a background worker started by the postmaster that
 *	  keeps the pool of batchflow.max_workers item workers alive for the
 *	  database batchflow.database_name, and sweeps up after crashes.
 *
 *	  Item workers are dynamic background workers that never restart on
 *	  their own (BGW_NEVER_RESTART) and notify the launcher when they stop;
 *	  the launcher starts a replacement, at most once a second per slot.
 *	  When no background worker slot is free it says so with a warning and
 *	  a hint, and tries again later.
 *
 *	  On its first start after the server started (or crashed), the launcher
 *	  returns items whose claim was interrupted to the queue.  Every poll
 *	  interval it closes loops that have nothing left to execute, which
 *	  covers a crash between an item's commit and the closing of its loop.
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
#include "counter_rebuild.h"
#include "history_prune.h"
#include "launcher.h"
#include "pool.h"
#include "run.h"
#include "security.h"
#include "spi_util.h"

static volatile sig_atomic_t got_sigterm = false;

static void bf_launcher_sigterm(SIGNAL_ARGS);
static bool bf_start_worker(int slotno, BackgroundWorkerHandle **handle);
static void bf_keep_pool(BackgroundWorkerHandle **handles, TimestampTz *last_start);
static void bf_sweep(bool recover);
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

/* Start the item worker for one slot; false if the postmaster has no room. */
static bool
bf_start_worker(int slotno, BackgroundWorkerHandle **handle)
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
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* Start a worker for every slot that has none, at most once a second each. */
static void
bf_keep_pool(BackgroundWorkerHandle **handles, TimestampTz *last_start)
{
	static bool warned = false;
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < bf_pool_nslots(); i++)
	{
		pid_t		pid;
		BfWorkerView w;

		if (handles[i] != NULL &&
			GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			continue;

		/* A worker of an earlier launcher may still serve this slot. */
		if (bf_pool_read(i, &w) && kill(w.pid, 0) == 0)
			continue;

		if (!TimestampDifferenceExceeds(last_start[i], now, 1000))
			continue;
		last_start[i] = now;
		if (handles[i] != NULL)
		{
			pfree(handles[i]);
			handles[i] = NULL;
		}
		if (!bf_start_worker(i, &handles[i]))
		{
			handles[i] = NULL;
			if (!warned)
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("batchflow could not start item worker %d: no background worker slot is free", i),
						 errdetail("batchflow.max_workers is %d; the launcher will keep trying.",
								   bf_max_workers),
						 errhint("Raise max_worker_processes (it must leave room for batchflow.max_workers + 1 and any other background workers) and restart the server.")));
			warned = true;
			break;
		}
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

/*
 * Re-queue items whose claim no live worker holds (after a restart: every
 * claim), then close loops that have nothing left to execute, each in a
 * transaction of its own; wake the workers after a restart (recover).
 */
static void
bf_sweep(bool recover)
{
	int64	   *ids = NULL;
	int			n = 0;
	MemoryContext cxt = CurrentMemoryContext;

	bf_txn_begin("batchflow: sweeping");
	if (!OidIsValid(get_namespace_oid("batchflow", true)))
	{
		bf_txn_end();
		pgstat_report_activity(STATE_IDLE, NULL);
		return;
	}
	bf_requeue_orphans();
	ids = bf_loops_to_close(cxt, &n);
	bf_txn_end();

	for (int i = 0; i < n; i++)
	{
		bf_txn_begin("batchflow: closing loop");
		(void) bf_loop_try_close(ids[i]);
		bf_txn_end();
	}
	if (recover || n > 0)
		bf_wake_workers();
	bf_counter_rebuild_sweep();
	bf_history_prune_sweep();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Entry point of the launcher. */
void
bf_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle **handles;
	TimestampTz *last_start;
	MemoryContext sweep_cxt;
	bool		recover;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, bf_launcher_sigterm);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bf_database_name, NULL, 0);
	bf_worker_pin_search_path();
	pgstat_report_appname("batchflow launcher");

	recover = !bf_pool_recovered();

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * bf_pool_nslots());
	last_start = MemoryContextAllocZero(TopMemoryContext,
										sizeof(TimestampTz) * bf_pool_nslots());
	sweep_cxt = AllocSetContextCreate(TopMemoryContext, "batchflow sweep",
									  ALLOCSET_DEFAULT_SIZES);

	ereport(LOG,
			(errmsg("batchflow launcher started for database \"%s\" with %d workers",
					bf_database_name, bf_max_workers)));

	while (!got_sigterm)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		bf_keep_pool(handles, last_start);

		MemoryContextSwitchTo(sweep_cxt);
		PG_TRY();
		{
			bf_sweep(recover);
			if (recover)
				bf_pool_set_recovered();
			recover = false;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(sweep_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(sweep_cxt);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 bf_poll_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	bf_stop_pool(handles);
	ereport(LOG, (errmsg("batchflow launcher shutting down")));

	/*
	 * Exit code 1: if the server is not shutting down (someone terminated
	 * just the launcher), the postmaster starts it again after 5 seconds.
	 */
	proc_exit(1);
}
