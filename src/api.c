/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The run-control functions users call: bf_start, bf_wait, bf_cancel
 *	  and bf_retry.
 *
 *	  Each runs as its caller, checks that the caller may act on the run,
 *	  then switches to the extension owner for the writes to batchflow's
 *	  tables.  Everything happens in the caller's transaction: a run started
 *	  in a transaction that rolls back never existed, and the workers are
 *	  woken only when it commits.
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "batchflow.h"
#include "api.h"
#include "databases.h"
#include "db_served.h"
#include "input_check.h"
#include "loop_start.h"
#include "pool.h"
#include "wake_commit.h"
#include "run_control.h"
#include "security.h"
#include "spi_util.h"
#include "version_check.h"

/* bf_start's statements, prepared once per session. */
static SPIPlanPtr start_lookup_plan = NULL;
static SPIPlanPtr start_insert_plan = NULL;

PG_FUNCTION_INFO_V1(bf_start);
PG_FUNCTION_INFO_V1(bf_wait);
PG_FUNCTION_INFO_V1(bf_cancel);
PG_FUNCTION_INFO_V1(bf_retry);

static char *bf_run_status(int64 run_id);
static bool bf_status_is_final(const char *status);

/* Is this a run status that will not change any more? */
static bool
bf_status_is_final(const char *status)
{
	return strcmp(status, "succeeded") == 0 ||
		strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

/*
 * The opening of bf_wait, bf_cancel and bf_retry: the SQL objects are of
 * this library's version, SPI is connected, the call runs as the
 * extension owner (saved holds the caller), and the run exists and is the
 * caller's (security.c; status and started_here as bf_run_checked gives
 * them).  run_call_end undoes it.
 */
static void
run_call_begin(int64 run_id, BfSavedUser *saved, char **status, bool *started_here)
{
	bf_check_sql_version();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_become_admin(saved);
	bf_run_checked(run_id, saved->userid, status, started_here);
}

/* Back to the caller's identity, SPI closed. */
static void
run_call_end(BfSavedUser *saved)
{
	bf_restore_user(saved);
	SPI_finish();
}

/*
 * Execute sql with the run's id as $1 (inside SPI); an unexpected result
 * is an internal error "could not <failure> <run>".  Returns the rows
 * processed.
 */
static uint64
run_exec(const char *sql, int64 run_id, int expected, const char *failure)
{
	Datum		arg = Int64GetDatum(run_id);
	Oid			argtype = INT8OID;

	if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, false, 0) != expected)
		elog(ERROR, "could not %s " INT64_FORMAT, failure, run_id);
	return SPI_processed;
}

/*
 * bf_start(workflow text, input jsonb) returns bigint
 *
 * Creates the run and the items of its first loop in the caller's
 * transaction.  The input is checked first (input_check.c): one that is
 * not an object, or a first loop's variable that is not an array, is
 * refused before anything is created.  Problems found later, when a run
 * reaches a node, fail the run with a recorded error instead.
 */
Datum
bf_start(PG_FUNCTION_ARGS)
{
	text	   *name;
	Datum		input;
	Oid			caller = GetUserId();
	BfSavedUser saved;
	Oid			argtypes[3] = {TEXTOID, OIDOID, JSONBOID};
	Datum		args[3];
	bool		isnull;
	int32		version_id;
	Oid			wf_owner;
	int64		run_id;
	Jsonb	   *definition;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow name must not be null"),
				 errhint("Pass the name given to bf_register.")));
	name = PG_GETARG_TEXT_PP(0);
	bf_check_sql_version();
	if (PG_ARGISNULL(1))
		input = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	else
		input = PG_GETARG_DATUM(1);

	bf_become_admin(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* Plans kept per session: a caller that starts runs often parses nothing. */
	args[0] = PointerGetDatum(name);
	if (SPI_execute_plan(bf_keep_plan(&start_lookup_plan,
									  "SELECT v.id, w.owner, v.definition"
									  "  FROM batchflow.workflow w"
									  "  JOIN batchflow.workflow_version v ON v.workflow = w.name"
									  " WHERE w.name = $1"
									  " ORDER BY v.version DESC LIMIT 1",
									  1, argtypes),
						 args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up workflow");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", text_to_cstring(name)),
				 errhint("%s", bf_workflow_name_hint(text_to_cstring(name), caller))));
	version_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	wf_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 2, &isnull));
	definition = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 3, &isnull));

	/* The ownership check is made as the caller, not as the admin role. */
	bf_restore_user(&saved);
	if (!bf_can_manage(wf_owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow \"%s\"", text_to_cstring(name)),
				 errdetail("The workflow was registered by another role."),
				 errhint("Register your own copy under another name, or ask its owner to grant you its role.")));
	bf_check_start_input(text_to_cstring(name), definition, DatumGetJsonbP(input));
	bf_become_admin(&saved);

	argtypes[0] = INT4OID;
	args[0] = Int32GetDatum(version_id);
	args[1] = ObjectIdGetDatum(caller);
	args[2] = input;
	if (SPI_execute_plan(bf_keep_plan(&start_insert_plan,
									  "INSERT INTO batchflow.run (version_id, owner, input, vars)"
									  " VALUES ($1, $2, $3,"
									  "  CASE WHEN jsonb_typeof($3) = 'object' THEN $3 ELSE '{}' END)"
									  " RETURNING id",
									  3, argtypes),
						 args, NULL, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not create run");
	run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));

	/* Its first loop and items (loop_start.c). */
	bf_advance(run_id, 0, true);

	SPI_finish();
	bf_restore_user(&saved);
	bf_warn_if_unserved("this run");
	PG_RETURN_INT64(run_id);
}

/* Current status of a run, read with a fresh snapshot (inside SPI). */
static char *
bf_run_status(int64 run_id)
{
	Datum		arg = Int64GetDatum(run_id);
	Oid			argtype = INT8OID;

	if (SPI_execute_with_args("SELECT status FROM batchflow.run WHERE id = $1",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run " INT64_FORMAT " does not exist", run_id),
				 errdetail("The run was deleted while waiting for it.")));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * bf_wait(run bigint, timeout interval) returns text
 *
 * Sleeps on a condition variable that is broadcast whenever a run finishes,
 * re-reading the run's status after each wake-up; no busy waiting.
 */
Datum
bf_wait(PG_FUNCTION_ARGS)
{
	int64		run_id;
	Interval   *timeout;
	int64		timeout_us;
	TimestampTz deadline;
	char	   *status;
	BfSavedUser saved;
	text	   *result;
	bool		started_here;
	ConditionVariable *cv;
	bool		first = true;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	run_id = PG_GETARG_INT64(0);
	if (PG_ARGISNULL(1))
		timeout_us = (int64) 600 * USECS_PER_SEC;
	else
	{
		timeout = PG_GETARG_INTERVAL_P(1);
		timeout_us = timeout->time +
			(int64) timeout->day * USECS_PER_DAY +
			(int64) timeout->month * DAYS_PER_MONTH * USECS_PER_DAY;
	}
	if (timeout_us < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative"),
				 errhint("Pass an interval such as '30 seconds'.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("bf_wait cannot be used in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("Such a transaction would never see the run finish."),
				 errhint("Call bf_wait in a READ COMMITTED transaction.")));

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_us / 1000);
	run_call_begin(run_id, &saved, NULL, &started_here);
	if (started_here)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " was started in the current transaction", run_id),
				 errdetail("The workers cannot see the run before this transaction commits, so waiting for it here would never end."),
				 errhint("Commit the transaction that called bf_start, then call bf_wait.")));

	cv = bf_pool_run_done_cv();
	if (cv != NULL)
		ConditionVariablePrepareToSleep(cv);
	for (;;)
	{
		long		remaining;

		status = bf_run_status(run_id);
		if (bf_status_is_final(status))
			break;
		if (first)
			bf_error_if_unserved(run_id);
		first = false;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;
		/* Sleep at most a second: a safety net against a missed broadcast. */
		remaining = Min(remaining, 1000);
		if (cv != NULL)
			ConditionVariableTimedSleep(cv, remaining, PG_WAIT_EXTENSION);
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, 100), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
	}
	if (cv != NULL)
		ConditionVariableCancelSleep();

	bf_restore_user(&saved);
	/*
	 * status lives in SPI's procedure context, which SPI_finish frees: build
	 * the result in the caller's context (SPI_palloc), or several bf_wait
	 * calls in one statement read each other's freed memory.
	 */
	result = (text *) SPI_palloc(VARHDRSZ + strlen(status));
	SET_VARSIZE(result, VARHDRSZ + strlen(status));
	memcpy(VARDATA(result), status, strlen(status));
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}

/*
 * bf_cancel(run bigint, force boolean) returns boolean
 *
 * Marks the run's open loops cancelled (workers stop claiming at once),
 * skips their pending items, and closes what can be closed; items already
 * executing finish, and the last of them closes the run as cancelled.
 * With force, those items are interrupted once this transaction commits
 * (force_cancel.c): their attempts roll back and they end skipped.
 * Returns false if the run had already finished.
 */
Datum
bf_cancel(PG_FUNCTION_ARGS)
{
	int64		run_id = PG_GETARG_INT64(0);
	bool		force = PG_NARGS() > 1 && PG_GETARG_BOOL(1);
	char	   *status;
	BfSavedUser saved;

	run_call_begin(run_id, &saved, &status, NULL);
	if (bf_status_is_final(status))
	{
		run_call_end(&saved);
		PG_RETURN_BOOL(false);
	}

	(void) run_exec("WITH c AS ("
					"  UPDATE batchflow.loop"
					"     SET status = 'cancelled', error = 'cancelled by bf_cancel'"
					"   WHERE run_id = $1 AND finished_at IS NULL"
					"   RETURNING id)"
					" SELECT batchflow._close_loop(id) FROM c",
					run_id, SPI_OK_SELECT, "cancel run");

	/* Child runs of its items (workflow activities) are cancelled too. */
	(void) run_exec("SELECT batchflow._cancel_children($1)",
					run_id, SPI_OK_SELECT, "cancel the child runs of run");

	/*
	 * Items in flight may end before this transaction commits, and then no
	 * worker would close the loop before its next poll: wake them at commit.
	 */
	bf_wake_on_commit();
	if (force)
	{
		bf_force_cancel_on_commit(run_id);
		/* And the items executing in its child runs, and theirs. */
		bf_force_cancel_descendants(run_id);
	}

	/* A run between nodes has no open loop: cancel the run itself. */
	if (run_exec("UPDATE batchflow.run"
				 "   SET status = 'cancelled', finished_at = clock_timestamp(),"
				 "       error = 'cancelled by bf_cancel'"
				 " WHERE id = $1 AND finished_at IS NULL"
				 "   AND NOT EXISTS (SELECT 1 FROM batchflow.loop"
				 "                    WHERE run_id = $1 AND finished_at IS NULL)",
				 run_id, SPI_OK_UPDATE, "cancel run") > 0)
		bf_runs_finished_on_commit();

	run_call_end(&saved);
	PG_RETURN_BOOL(true);
}

/*
 * bf_retry(run bigint) returns bigint
 *
 * Re-queues the failed and skipped items of a finished run, re-opens their
 * loops and sets the run running again.  Attempt counts start again from
 * zero; the errors of earlier attempts stay in batchflow.item_error.
 */
Datum
bf_retry(PG_FUNCTION_ARGS)
{
	int64		run_id = PG_GETARG_INT64(0);
	char	   *status;
	BfSavedUser saved;
	int64		requeued;

	run_call_begin(run_id, &saved, NULL, NULL);

	/*
	 * Lock the run first, then read its status and whether the launcher
	 * pruned (or is pruning) its items: two bf_retry calls cannot
	 * interleave, and the run cannot change between the check and the
	 * re-queue (the pruner skips a run that is locked).
	 */
	if (run_exec("SELECT r.status,"
				 "       EXISTS (SELECT 1 FROM batchflow.pruned_run p WHERE p.run_id = r.id)"
				 "  FROM batchflow.run r WHERE r.id = $1 FOR UPDATE OF r",
				 run_id, SPI_OK_SELECT, "lock run") != 1)
		elog(ERROR, "could not lock run " INT64_FORMAT, run_id);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (!bf_status_is_final(status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " is still %s", run_id, status),
				 errdetail("Only a finished run can be retried."),
				 errhint("Wait for it with bf_wait, or stop it with bf_cancel first.")));
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), "t") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " cannot be retried: its items were pruned", run_id),
				 errdetail("The launcher deletes the items of runs that finished longer ago than batchflow.history_retention; the run's failed and skipped items are no longer there to re-queue."),
				 errhint("Start a new run with the inputs that failed; raise batchflow.history_retention to keep runs retryable for longer.")));

	requeued = (int64) run_exec("UPDATE batchflow.item"
								"   SET status = 'pending', attempts = 0, not_before = NULL,"
								"       started_at = NULL, finished_at = NULL, error = NULL"
								" WHERE run_id = $1 AND status IN ('failed', 'skipped')",
								run_id, SPI_OK_UPDATE, "re-queue items of run");
	if (requeued > 0)
	{
		/* dependsOn: which re-queued items wait for others again. */
		(void) run_exec("SELECT batchflow._deps_retry($1)",
						run_id, SPI_OK_SELECT, "recount the dependencies of run");
		(void) run_exec("UPDATE batchflow.loop l"
						"   SET status = 'running', finished_at = NULL, error = NULL"
						" WHERE run_id = $1 AND EXISTS"
						"   (SELECT 1 FROM batchflow.item i"
						"     WHERE i.loop_ref = l.id AND i.status = 'pending')",
						run_id, SPI_OK_UPDATE, "re-open loops of run");
		(void) run_exec("UPDATE batchflow.run"
						"   SET status = 'running', finished_at = NULL, error = NULL,"
						"       current_node = (SELECT min(node_index) FROM batchflow.loop"
						"                        WHERE run_id = $1 AND finished_at IS NULL)"
						" WHERE id = $1",
						run_id, SPI_OK_UPDATE, "restart run");
		bf_wake_on_commit();
	}

	run_call_end(&saved);
	PG_RETURN_INT64(requeued);
}
