/*-------------------------------------------------------------------------
 *
 * item_result.c
 *	  Recording the outcome of an item's attempt, in the same transaction
 *	  as the attempt itself, according to the loop's error strategy.
 *
 *	  success    item succeeded; a top-level activity also stores its
 *	             output in the run (outputs[node id], vars[output name])
 *	  failure    the error goes to batchflow.item_error, then:
 *	               retry with attempts left: back to pending, not before
 *	                 retryDelayMs * 2^(attempt-1) from now
 *	               otherwise: item failed; under fail-fast the loop is
 *	                 marked failed at once, so no new item of it starts
 *	             a fatal failure (the run's owner was dropped) skips the
 *	             retries and fails the loop under every strategy
 *
 * IDENTIFICATION
 *	  src/item_result.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "deps.h"
#include "item_result.h"
#include "progress.h"
#include "run_control.h"
#include "spi_util.h"

static SPIPlanPtr success_plan = NULL;
static SPIPlanPtr activity_output_plan = NULL;
static SPIPlanPtr error_plan = NULL;
static SPIPlanPtr retry_plan = NULL;
static SPIPlanPtr failed_plan = NULL;
static SPIPlanPtr fail_loop_plan = NULL;

static void bf_run_plan(SPIPlanPtr plan, Datum *args, const char *nulls, int expect);

/* Execute a kept statement and check its result code. */
static void
bf_run_plan(SPIPlanPtr plan, Datum *args, const char *nulls, int expect)
{
	int			rc = SPI_execute_plan(plan, args, nulls, false, 0);

	if (rc != expect)
		elog(ERROR, "batchflow bookkeeping statement failed: %s",
			 SPI_result_code_string(rc));
}

/*
 * Record the outcome of the claimed item's attempt (inside SPI), count it
 * (bf_progress_count, before anything that announces progress), and
 * return what became of the item.  A failed attempt is retried under the
 * retry strategy while attempts are left, unless the failure is fatal.
 */
BfOutcome
bf_record_result(BfClaim *claim, BfItemResult *result)
{
	BfLoopInfo *loop = claim->loop;
	int32		attempt = claim->attempts + 1;
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	if (result->cancelled)
		return bf_record_cancelled(claim);

	if (success_plan == NULL)
	{
		Oid			t_ok[4] = {INT8OID, INT4OID, TIMESTAMPTZOID, JSONBOID};
		Oid			t_out[4] = {INT8OID, TEXTOID, TEXTOID, JSONBOID};
		Oid			t_err[6] = {INT8OID, INT8OID, INT4OID, INT4OID, TEXTOID, TEXTOID};
		Oid			t_retry[5] = {INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID, INT8OID};
		Oid			t_fail[4] = {INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID};
		Oid			t_loop[2] = {INT8OID, TEXTOID};

		bf_keep_plan(&success_plan, "UPDATE batchflow.item"
									   "   SET status = 'succeeded', attempts = attempts + 1, worker_pid = NULL,"
									   "       started_at = $3, finished_at = clock_timestamp(),"
									   "       output = $4, error = NULL, not_before = NULL"
									   " WHERE loop_ref = $1 AND idx = $2", 4, t_ok);
		bf_keep_plan(&activity_output_plan, "UPDATE batchflow.run"
											   "   SET outputs = outputs || jsonb_build_object($2, $4),"
											   "       vars = CASE WHEN $3 IS NULL THEN vars"
											   "              ELSE vars || jsonb_build_object($3, $4) END"
											   " WHERE id = $1", 4, t_out);
		/* clock_timestamp(): a batched transaction began before this attempt. */
		bf_keep_plan(&error_plan, "INSERT INTO batchflow.item_error"
									 " (run_id, loop_ref, idx, attempt, sqlstate, error, failed_at)"
									 " VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())", 6, t_err);
		bf_keep_plan(&retry_plan, "UPDATE batchflow.item"
									 "   SET status = 'pending', worker_pid = NULL,"
									 "       attempts = attempts + 1, started_at = $3, error = $4,"
									 "       not_before = clock_timestamp() + make_interval(secs => $5::float8 / 1000)"
									 " WHERE loop_ref = $1 AND idx = $2", 5, t_retry);
		bf_keep_plan(&failed_plan, "UPDATE batchflow.item"
									  "   SET status = 'failed', attempts = attempts + 1, worker_pid = NULL,"
									  "       started_at = $3, finished_at = clock_timestamp(),"
									  "       error = $4, not_before = NULL"
									  " WHERE loop_ref = $1 AND idx = $2", 4, t_fail);
		bf_keep_plan(&fail_loop_plan, "UPDATE batchflow.loop SET status = 'failed', error = $2"
										 " WHERE id = $1 AND status = 'running'", 2, t_loop);
	}

	args[0] = Int64GetDatum(loop->loop_ref);
	args[1] = Int32GetDatum(claim->idx);
	args[2] = TimestampTzGetDatum(claim->started_at);

	if (result->ok)
	{
		args[3] = result->output;
		nulls[3] = result->output_isnull ? 'n' : ' ';
		bf_run_plan(success_plan, args, nulls, SPI_OK_UPDATE);
		bf_progress_count(claim, BF_OUTCOME_SUCCEEDED);
		if (loop->has_deps)
			bf_deps_item_succeeded(loop->loop_ref, claim->idx);

		if (loop->is_activity)
		{
			Datum		oargs[4];
			char		onulls[4] = {' ', ' ', ' ', ' '};

			oargs[0] = Int64GetDatum(loop->run_id);
			oargs[1] = CStringGetTextDatum(loop->node_id);
			oargs[2] = loop->output_var ? CStringGetTextDatum(loop->output_var) : (Datum) 0;
			onulls[2] = loop->output_var ? ' ' : 'n';
			oargs[3] = result->output_isnull
				? DirectFunctionCall1(jsonb_in, CStringGetDatum("null"))
				: result->output;
			bf_run_plan(activity_output_plan, oargs, onulls, SPI_OK_UPDATE);
		}
		return BF_OUTCOME_SUCCEEDED;
	}

	/* A failed attempt: keep its error, then apply the strategy. */
	{
		Datum		eargs[6];
		char		enulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

		eargs[0] = Int64GetDatum(loop->run_id);
		eargs[1] = Int64GetDatum(loop->loop_ref);
		eargs[2] = Int32GetDatum(claim->idx);
		eargs[3] = Int32GetDatum(attempt);
		eargs[4] = result->sqlstate ? CStringGetTextDatum(result->sqlstate) : (Datum) 0;
		enulls[4] = result->sqlstate ? ' ' : 'n';
		eargs[5] = CStringGetTextDatum(result->error);
		bf_run_plan(error_plan, eargs, enulls, SPI_OK_INSERT);
	}

	args[3] = CStringGetTextDatum(result->error);
	if (loop->strategy == BF_RETRY && attempt <= loop->max_retries &&
		!result->fatal)
	{
		/* Exponential backoff: delay * 2^(attempt-1), capped at an hour. */
		double		delay = (double) loop->retry_delay_ms;

		for (int i = 1; i < attempt && delay < 3600000.0; i++)
			delay *= 2;
		/* An HTTP Retry-After asks for at least that long. */
		delay = Max(delay, (double) result->retry_after_ms);
		args[4] = Int64GetDatum((int64) Min(delay, 3600000.0));
		bf_run_plan(retry_plan, args, nulls, SPI_OK_UPDATE);
		bf_progress_count(claim, BF_OUTCOME_WILL_RETRY);
		return BF_OUTCOME_WILL_RETRY;
	}

	bf_run_plan(failed_plan, args, nulls, SPI_OK_UPDATE);
	/* Before the loop's status change, whose trigger announces its counts. */
	bf_progress_count(claim, BF_OUTCOME_FAILED);
	if (loop->has_deps)
		(void) bf_deps_item_failed(loop->loop_ref, claim->idx);
	if (loop->strategy == BF_FAIL_FAST || loop->is_activity || result->fatal)
	{
		Datum		largs[2];

		largs[0] = Int64GetDatum(loop->loop_ref);
		largs[1] = CStringGetTextDatum(psprintf("item %d of \"%s\" failed: %s",
												claim->idx, loop->node_id, result->error));
		bf_run_plan(fail_loop_plan, largs, NULL, SPI_OK_UPDATE);
	}
	return BF_OUTCOME_FAILED;
}

/*
 * In the PG_CATCH of an attempt run in its own subtransaction (SQL
 * children, a child run's start): take the error, roll the subtransaction
 * back with every effect of the attempt, return to the attempt's memory
 * context and resource owner, and make the error the attempt's result.
 * failed_child: the id of the child that raised it, or NULL.
 */
void
bf_result_from_error(BfItemResult *result, MemoryContext oldcxt,
					 ResourceOwner oldowner, const char *failed_child)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(oldcxt);
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;

	result->ok = false;
	result->sqlstate = pstrdup(unpack_sql_state(edata->sqlerrcode));
	if (failed_child != NULL)
		result->failed_child = pstrdup(failed_child);
	result->error = edata->detail
		? psprintf("%s (%s)", edata->message, edata->detail)
		: pstrdup(edata->message);
	FreeErrorData(edata);
}
