/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The item worker: a background worker that claims items and executes
 *	  them, one transaction per item.
 *
 *	  Each iteration: start a transaction, claim the next item under its
 *	  loop's cap (claim.c), run its children (activity_sql.c), record the
 *	  outcome and count it (item_result.c), commit.  Items that finish quickly are
 *	  batched: within batchflow.batch_time the worker keeps its cap lock and
 *	  takes the loop's next item into the same transaction, so tiny items
 *	  share a commit.  Then, in transactions of their own,
 *	  close the loops that look finished (run.c), and materialise the next
 *	  chunk of a loop that fills (source_fill.c).  When there is nothing to
 *	  claim the worker goes on the idle list and sleeps on its latch, which
 *	  a commit of new work sets when it can use this worker (wakeup.c); the
 *	  poll interval is only a safety net, shortened to the end of the
 *	  nearest retry backoff.
 *
 *	  Around each iteration, worker_db.c looks after the worker's database:
 *	  the worker serves the database its slot is lent to, runs that
 *	  database's recovery and sweeps in turn with its other workers, and
 *	  hands its slot back when the launcher asks or when it stays idle.
 *
 *	  SIGTERM is handled by die(): the current item's transaction aborts,
 *	  its effects vanish with it, and the item stays pending for the next
 *	  worker.  SIGHUP reloads the configuration between items.
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
#include "storage/sinval.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "batchflow.h"
#include "activity_workflow.h"
#include "activity_sql.h"
#include "claim.h"
#include "databases.h"
#include "http_batch.h"
#include "item_result.h"
#include "loop_close.h"
#include "loop_start.h"
#include "loopcache.h"
#include "pool.h"
#include "progress.h"
#include "run.h"
#include "security.h"
#include "short_items.h"
#include "spi_util.h"
#include "wakeup.h"
#include "worker.h"
#include "bigbatch.h"
#include "worker_db.h"
#include "worker_warmup.h"
#include "run_control.h"

static bool warmed_up = false;
static bool rehearsed = false;

/*
 * A loop found busy (its row held by another closer) is tried again after
 * BF_CLOSE_RETRY_FIRST_MS, then after twice as long each time, up to
 * BF_CLOSE_RETRY_MS.  The holder is usually either closing it (the next
 * try finds it closed) or a closer that saw this worker's item still in
 * flight and let go at once: then only this worker's retry closes the loop,
 * and a first retry after the full BF_CLOSE_RETRY_MS held the run up for
 * that long.
 */
#define BF_CLOSE_RETRY_FIRST_MS 2
static long close_retry_ms = 0;

static bool bf_worker_step(long *sleep_ms);
static bool bf_close_loops(int64 *ids, int n);

/*
 * Close each listed loop in a transaction of its own, without waiting for
 * another session's lock on it; true if some loop was busy so (the worker
 * must look again soon: loop_close.c).
 */
static bool
bf_close_loops(int64 *ids, int n)
{
	bool		any_busy = false;

	for (int i = 0; i < n; i++)
	{
		bool		closed;
		bool		busy;

		bf_txn_begin("batchflow: closing loop");
		closed = bf_loop_try_close(ids[i], false, &busy);
		bf_txn_end();
		if (closed)
			bf_loop_info_forget(ids[i]);
		any_busy |= busy;
	}
	return any_busy;
}

/*
 * One unit of work: claim an item and execute it, or find nothing to do.
 * Returns true if an item was executed; otherwise *sleep_ms says how long
 * the worker may sleep.
 */
static bool
bf_worker_step(long *sleep_ms)
{
	BfClaim		claim;
	BfItemResult result;
	int64		close_list[BF_MAX_CLOSE];
	int			nclose = 0;
	TimestampTz next_due = DT_NOEND;
	bool		claimed = false;
	bool		http = false;
	bool		filled;

	*sleep_ms = bf_poll_interval_ms;

	bf_txn_begin("batchflow: claiming");

	/* Before CREATE EXTENSION there is nothing to do. */
	if (OidIsValid(get_namespace_oid("batchflow", true)))
	{
		/*
		 * Prepare the first plans of closing a loop and advancing a run
		 * once, before any run waits on them.  Called with ids that do
		 * not exist, they return at once.  Tried once per process,
		 * whatever happens.
		 */
		if (!warmed_up)
		{
			bool		busy;

			warmed_up = true;
			(void) bf_close_loop(-1, false, &busy);
			bf_advance(-1, 0, false);
		}
		bf_http_requeue_mine();
		claimed = bf_claim_next_item(&claim, &next_due, close_list, &nclose);
		if (claimed)
			bf_idle_claimed(&claim);
		if (claimed && claim.loop->has_workflow)
		{
			/* Starts a child run; the item waits without a worker. */
			bf_workflow_take(&claim);
		}
		else if (claimed && claim.loop->has_http)
		{
			/* HTTP items run outside this transaction (http_batch.c). */
			bf_http_take(&claim);
			http = true;
		}
		else if (claimed)
		{
			TimestampTz batch_start = GetCurrentTimestamp();
			int			nitems = 0;

			/*
			 * Execute the item; while items stay short, keep the cap lock and
			 * take the loop's next item into the same transaction.
			 */
			for (;;)
			{
				bf_pool_publish_item(claim.loop->run_id, claim.loop->loop_ref,
									 claim.idx, claim.started_at);
				bf_cancel_note_claim(claim.loop->run_id);
				bf_execute_item(&claim, &result);
				(void) bf_record_result(&claim, &result);
				bf_pool_publish_recorded();
				nitems++;
				if (!result.ok || claim.loop->is_activity ||
					nitems >= BF_MAX_BATCH_ITEMS ||
					TimestampDifferenceExceeds(batch_start, GetCurrentTimestamp(),
											   bf_batch_ms))
					break;
				CHECK_FOR_INTERRUPTS();
				if (!bf_claim_short_next(&claim))
					break;
			}

			/*
			 * Near the end of the loop (items are claimed in index order),
			 * close it in this same transaction if nothing else is left:
			 * the run moves on, or its waiters wake, one commit earlier.
			 * Items other workers still hold look pending here, so at most
			 * one of the last finishers closes; if none does, the usual
			 * path after the commit does.
			 */
			if (claim.idx >= claim.loop->total - 2 * claim.loop->concurrency)
				(void) bf_loop_close_if_done(claim.loop->loop_ref);
		}
	}

	/*
	 * A look that found nothing but loops to close writes its pending
	 * progress counts after the closes, not here: written here they would
	 * make this read-only transaction wait for a WAL flush (and the notify
	 * lock) before the close could start, on the path from a loop's last
	 * item to its run moving on.  A closed loop's counts are final from its
	 * items (41_progress_compute.sql), so writing them after the close
	 * loses nothing.
	 */
	if (claimed || nclose == 0)
		bf_progress_flush();
	bf_txn_end();
	/* An HTTP batch stays shown (bf_pool_publish_batch) while it is driven. */
	if (claimed && !http)
	{
		bf_pool_publish_idle();
		bf_cancel_note_claim(0);
	}
	if (http)
		bf_http_drive();

	if (nclose > 0 && bf_close_loops(close_list, nclose))
	{
		/* A loop was being closed by another session: look again soon. */
		bf_claim_saw_work = true;
		close_retry_ms = close_retry_ms == 0 ? BF_CLOSE_RETRY_FIRST_MS :
			Min(close_retry_ms * 2, BF_CLOSE_RETRY_MS);
		*sleep_ms = Min(*sleep_ms, close_retry_ms);
	}
	else
		close_retry_ms = 0;
	if (nclose > 0 && !claimed)
	{
		/* The counts left above, before this worker may go to sleep. */
		bf_txn_begin("batchflow: writing progress");
		bf_progress_flush();
		bf_txn_end();
	}

	/*
	 * Materialise items of query, array and keyRanges loops (source_fill.c),
	 * after the claim: a worker woken for new items claims first, and only
	 * then, in a transaction of its own, lists the loops to fill when its
	 * list is older than 200 ms (for every worker of a short batch's
	 * ramp-up, which slept longer than that).  A new loop that fills has
	 * nothing to claim yet; this worker starts filling it right here.
	 */
	filled = bf_fill_step();

	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	if (!claimed && next_due != DT_NOEND)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_due);

		*sleep_ms = Max(1, Min(*sleep_ms, ms + 1));
	}
	return claimed || filled;
}

/* Entry point of an item worker; main_arg is its shared-memory slot. */
void
bf_worker_main(Datum main_arg)
{
	MemoryContext worker_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	bf_worker_db_connect(DatumGetInt32(main_arg));
	bf_cancel_worker_attach(bf_pool_my_slot());
	bf_worker_pin_search_path();
	pgstat_report_appname("batchflow worker");

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "batchflow worker",
									   ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		long		sleep_ms = 0;
		bool		worked = false;
		uint64		gen;
		TimestampTz deadline;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* Read before the look's snapshot: see wakeup.c. */
		gen = bf_work_generation();
		MemoryContextSwitchTo(worker_cxt);
		PG_TRY();
		{
			if (bf_worker_db_ready(&sleep_ms))
				worked = bf_worker_step(&sleep_ms);
		}
		PG_CATCH();
		{
			/* Report, clean up, and carry on after a pause. */
			MemoryContextSwitchTo(worker_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			bf_http_abandon();
			bf_fill_abandon();
			bf_pool_publish_idle();
			bf_cancel_note_claim(0);
			pgstat_report_activity(STATE_IDLE, NULL);
			sleep_ms = 1000;
			worked = false;
			bf_claim_saw_work = true;	/* look again after the pause */
		}
		PG_END_TRY();
		MemoryContextReset(worker_cxt);
		bf_idle_step_done();

		if (worked)
		{
			bf_worker_db_claimed();
			continue;
		}

		/* Idle for too long: stop counting as idle, look once more, exit. */
		if (!bf_worker_db_idle_begin(&sleep_ms))
			continue;

		/*
		 * Once per process, at its first quiet moment (a look in a database
		 * with the extension that saw no loop with work left): rehearse a
		 * claim and a close, so that the first real ones run warm
		 * (worker_warmup.c); never while runs could use the CPU.  Work that
		 * commits meanwhile moves the generation: the worker looks again.
		 */
		if (warmed_up && !rehearsed && !bf_claim_saw_work)
			rehearsed = bf_worker_warm_up();

		if (bf_debug_idle_delay_ms > 0)
		{
			/* Tests only: stay in the window between the look and the idle list. */
			pgstat_report_activity(STATE_RUNNING, "batchflow: going idle");
			pg_usleep(bf_debug_idle_delay_ms * 1000L);
			pgstat_report_activity(STATE_IDLE, NULL);
		}

		/*
		 * Go on the idle list and sleep, unless new work committed since
		 * the look began; woken by the poll timeout with nothing changed,
		 * go back to sleep without a transaction (wakeup.c).
		 */
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sleep_ms);
		for (;;)
		{
			int			rc;
			long		left;

			if (!bf_idle_enter(gen))
				break;
			left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   Max(left, 1), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			(void) bf_idle_leave();
			if (ConfigReloadPending || bf_db_worker_exit_requested())
				break;
			if (bf_idle_latch_is_foreign(rc, gen))
			{
				/*
				 * Not a wake-up: a signal of PostgreSQL's own (a shared
				 * invalidation catch-up, a barrier).  Serve it without a
				 * look and sleep out the rest of the poll.
				 */
				if (catchupInterruptPending)
					ProcessCatchupInterrupt();
				CHECK_FOR_INTERRUPTS();
				if (TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline) > 0)
					continue;
				rc = WL_TIMEOUT;
			}
			if (!bf_idle_may_skip_look(rc, gen))
				break;
			deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sleep_ms);
		}
		bf_worker_db_idle_end();
	}
}
