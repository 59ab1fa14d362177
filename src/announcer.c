/*-------------------------------------------------------------------------
 *
 * announcer.c
 *	  The announcer: one background worker per database that sends the
 *	  NOTIFY batchflow_progress payloads committed by the database's
 *	  transactions (queued by announce.c in announce_queue.c).
 *
 *	  Started by the first transaction of the database that announces
 *	  and finds none running (that transaction and the next ones notify
 *	  for themselves until it has attached), or by the launcher when one
 *	  died with payloads queued.  BGW_NEVER_RESTART: when it exits, the
 *	  next announcing transaction starts another.  It waits on its latch,
 *	  which a commit that queued payloads sets; then it takes the ready
 *	  payloads at the head of the queue and notifies them in one
 *	  transaction with asynchronous commit (a notification is lost in a
 *	  crash anyway; the transactions that queued them committed
 *	  durably), so the notify lock is held for an instant.  It leaves
 *	  after BF_ANNOUNCER_IDLE_MS without work, and at once (once the
 *	  queue is empty) when DROP DATABASE and the like need the database
 *	  alone (database_hook.c).  It takes no pool slot and runs no item.
 *
 * IDENTIFICATION
 *	  src/announcer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/sinval.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "announce.h"
#include "announce_sender.h"
#include "announcer.h"

static void bf_announcer_send(char **payloads, int n);

/* Notify the payloads in one transaction with asynchronous commit. */
static void
bf_announcer_send(char **payloads, int n)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) set_config_option("synchronous_commit", "off", PGC_SUSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	for (int i = 0; i < n; i++)
		Async_Notify(BF_ANNOUNCE_CHANNEL, payloads[i]);
	CommitTransactionCommand();
}

/* Entry point of an announcer; main_arg is its database's OID. */
void
bf_announcer_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	bf_announce_sender_starting(dboid);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("batchflow announcer");
	bf_announce_register_callbacks();
	if (!bf_announce_sender_attach(dboid))
		proc_exit(0);

	cxt = AllocSetContextCreate(TopMemoryContext, "batchflow announcer",
								ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		char	  **payloads;
		bool		leave;
		bool		sent = true;
		int			n;
		int			rc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (catchupInterruptPending)
			ProcessCatchupInterrupt();

		/* Reset first: a commit after the look sets it again. */
		ResetLatch(MyLatch);
		n = bf_announce_take(&payloads, &leave);
		if (leave)
			proc_exit(0);
		if (n > 0)
		{
			MemoryContextSwitchTo(cxt);
			PG_TRY();
			{
				bf_announcer_send(payloads, n);
			}
			PG_CATCH();
			{
				/* The payloads are ready again (announce.c); retry later. */
				MemoryContextSwitchTo(cxt);
				EmitErrorReport();
				FlushErrorState();
				AbortCurrentTransaction();
				sent = false;
			}
			PG_END_TRY();
			MemoryContextReset(cxt);
			if (sent)
				continue;
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000,
							 PG_WAIT_EXTENSION);
			continue;
		}
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   BF_ANNOUNCER_IDLE_MS, PG_WAIT_EXTENSION);
		if ((rc & WL_TIMEOUT) && !(rc & WL_LATCH_SET) &&
			bf_announce_sender_idle_exit())
			proc_exit(0);
	}
}
