/*-------------------------------------------------------------------------
 *
 * wake_commit.c
 *	  What a transaction asks to happen when it commits: wake idle workers
 *	  of this database (all of them, as many as a new loop can use, or one
 *	  lead), make sure the database has a worker (databases.c), and wake
 *	  bf_wait sleepers (the pool's run_done_cv).  At abort all of it is
 *	  forgotten: uncommitted work wakes no one.
 *
 *	  Which idle workers a wake-up takes off the idle list is wakeup.c's
 *	  job, and the worker slots and the condition variable are pool.c's:
 *	  this file sits above both and neither calls it.  The trigger
 *	  batchflow._loop_wake (a new open loop asks for min(total,
 *	  concurrency) workers, one if sequential) is here too, since all it
 *	  does is ask for wake-ups at commit.
 *
 *	  State is per backend and per transaction (no shared memory): a few
 *	  flags and counts, read by one XactCallback registered on first use.
 *
 * IDENTIFICATION
 *	  src/wake_commit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"

#include "batchflow.h"
#include "databases.h"
#include "pool.h"
#include "wake_commit.h"
#include "wakeup.h"

/* What the current transaction asked to do once it commits. */
static bool wake_pending = false;
static int	wake_leads = 0;
static int	wake_direct = 0;
static bool runs_done_pending = false;
static bool xact_callback_registered = false;

static void bf_xact_callback(XactEvent event, void *arg);
static void bf_register_xact_callback(void);

PG_FUNCTION_INFO_V1(bf_sql_wake_on_commit);
PG_FUNCTION_INFO_V1(bf_sql_run_finished_on_commit);

/*
 * Wake every idle item worker of this database (busy ones look for work
 * as soon as their item commits; see wakeup.c), and make sure the database
 * has a worker at all (databases.c).
 */
void
bf_wake_workers(void)
{
	bf_db_note_work(MyDatabaseId);
	bf_wake_all_idle();
}

/* Make sure bf_xact_callback runs at the end of this transaction. */
static void
bf_register_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(bf_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/* Wake the workers when (and only if) the current transaction commits. */
void
bf_wake_on_commit(void)
{
	bf_register_xact_callback();
	wake_pending = true;
}

/*
 * New work for n workers (a new loop: min(items, cap)): wake that many
 * idle workers at commit.
 */
void
bf_wake_workers_on_commit(int n)
{
	bf_register_xact_callback();
	wake_direct = Min(wake_direct + n, BF_MAX_MAX_WORKERS);
}

/*
 * New work of unknown size: at commit, wake one idle worker, which wakes
 * as many more as the loop it claims from can use (wakeup.c).  Not needed
 * when the transaction created the loop (its trigger counted the workers).
 */
void
bf_wake_lead_on_commit(void)
{
	bf_register_xact_callback();
	if (wake_leads < BF_MAX_MAX_WORKERS)
		wake_leads++;
}

/* Wake bf_wait sleepers when the current transaction commits. */
void
bf_runs_finished_on_commit(void)
{
	bf_register_xact_callback();
	runs_done_pending = true;
}

/* At commit, act on what the transaction asked for; at abort, forget it. */
static void
bf_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				bf_wake_workers();
			else if (wake_direct > 0 || wake_leads > 0)
			{
				/* A database with no idle worker asks the launcher for one. */
				bf_db_note_work(MyDatabaseId);
				if (wake_direct > 0)
					bf_wake_idle(wake_direct, BF_WAKE_DIRECT);
				else
					bf_wake_idle(wake_leads, BF_WAKE_LEAD);
			}
			if (runs_done_pending && bf_pool_run_done_cv() != NULL)
				ConditionVariableBroadcast(bf_pool_run_done_cv());
			wake_pending = runs_done_pending = false;
			wake_leads = wake_direct = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = runs_done_pending = false;
			wake_leads = wake_direct = 0;
			break;
		default:
			break;
	}
}

/*
 * batchflow._wake_on_commit(): new work (_lazy_loop, a child run's end;
 * bf_advance calls bf_wake_lead_on_commit itself); at commit one idle
 * worker wakes and brings as many more as the loop it claims from can use
 * (a new loop's trigger has usually counted them already).
 */
Datum
bf_sql_wake_on_commit(PG_FUNCTION_ARGS)
{
	bf_wake_lead_on_commit();
	PG_RETURN_VOID();
}

/* batchflow._run_finished_on_commit(): SQL access to bf_runs_finished_on_commit. */
Datum
bf_sql_run_finished_on_commit(PG_FUNCTION_ARGS)
{
	bf_runs_finished_on_commit();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(bf_sql_loop_wake);

/*
 * Trigger loop_wake, AFTER INSERT ON batchflow.loop FOR EACH ROW: a new
 * open loop needs min(total, concurrency) workers (one if sequential);
 * ask for that many at commit.  Reads only the new row.
 */
Datum
bf_sql_loop_wake(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	bool		isnull;
	bool		sequential;
	int32		total;
	int32		cap;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		elog(ERROR, "batchflow._loop_wake must be an AFTER INSERT row trigger");
	desc = td->tg_relation->rd_att;
	tup = td->tg_trigtuple;

	(void) heap_getattr(tup, SPI_fnumber(desc, "finished_at"), desc, &isnull);
	if (!isnull)
		return PointerGetDatum(NULL);	/* an empty loop, closed at once */
	total = DatumGetInt32(heap_getattr(tup, SPI_fnumber(desc, "total"), desc, &isnull));
	cap = DatumGetInt32(heap_getattr(tup, SPI_fnumber(desc, "concurrency"), desc, &isnull));
	sequential = DatumGetBool(heap_getattr(tup, SPI_fnumber(desc, "sequential"), desc, &isnull));
	bf_wake_workers_on_commit(sequential ? 1 : Max(1, Min(total, cap)));
	return PointerGetDatum(NULL);
}
