/*-------------------------------------------------------------------------
 *
 * metrics_read.c
 *	  The metric functions of the Prometheus queries file:
 *	  batchflow.metric_items(), metric_runs(), metric_queue(),
 *	  metric_loops() and metric_running_loops(n).
 *
 *	  Each covers every workflow and run, whoever owns them, and
 *	  metric_items() also records how far it has counted (it writes
 *	  batchflow.metric_loop).  So, like the bf_* functions, they are C
 *	  functions that are not SECURITY DEFINER: EXECUTE, granted to
 *	  pg_monitor and batchflow_admin only, is the check made as the caller;
 *	  then the caller's identity is switched to the extension owner, with
 *	  search_path pinned, for the one query that computes the rows: the
 *	  internal SQL function of the same name with a leading underscore
 *	  (batchflow._metric_items() for batchflow.metric_items(), ...), whose
 *	  columns are the same.
 *
 * IDENTIFICATION
 *	  src/metrics_read.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "security.h"

#define BF_METRICS_MAX_ARGS 4

PG_FUNCTION_INFO_V1(bf_sql_metrics);

/*
 * batchflow.metric_*(...): the rows of batchflow._metric_*(...), computed
 * as the extension owner.
 */
Datum
bf_sql_metrics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name = get_func_name(fcinfo->flinfo->fn_oid);
	int			nargs = PG_NARGS();
	Oid			argtypes[BF_METRICS_MAX_ARGS];
	Datum		values[BF_METRICS_MAX_ARGS];
	char		nulls[BF_METRICS_MAX_ARGS];
	StringInfoData sql;
	BfSavedUser saved;

	if (name == NULL || nargs > BF_METRICS_MAX_ARGS)
		elog(ERROR, "bf_sql_metrics called for an unexpected function");
	InitMaterializedSRF(fcinfo, 0);

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT * FROM batchflow.%s(",
					 quote_identifier(psprintf("_%s", name)));
	for (int i = 0; i < nargs; i++)
	{
		argtypes[i] = get_fn_expr_argtype(fcinfo->flinfo, i);
		values[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		appendStringInfo(&sql, "%s$%d", i > 0 ? ", " : "", i + 1);
	}
	appendStringInfoChar(&sql, ')');

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_become_admin(&saved);
	if (SPI_execute_with_args(sql.data, nargs, argtypes, values, nulls,
							  false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read batchflow metrics: %s", sql.data);
	bf_restore_user(&saved);

	for (uint64 i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	SPI_finish();
	PG_RETURN_VOID();
}
