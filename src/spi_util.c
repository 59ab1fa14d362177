/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *	  Kept plans and the transaction bracket of background bookkeeping.
 *
 *	  bf_keep_plan prepares a statement the first time it is needed and
 *	  keeps it for the life of the process (SPI_keepplan): the hot paths
 *	  (claim, record, count) parse nothing per item.  bf_txn_begin and
 *	  bf_txn_end bracket one unit of background work in a transaction of
 *	  its own, with SPI connected and a snapshot pushed, and show the work
 *	  in pg_stat_activity.  Neither is used for a user's statement.
 *
 * IDENTIFICATION
 *	  src/spi_util.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "spi_util.h"

/*
 * The kept plan in *plan, prepared from sql (with nargs arguments of the
 * given types) and kept on first use.
 */
SPIPlanPtr
bf_keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, const Oid *types)
{
	SPIPlanPtr	p;

	if (*plan != NULL)
		return *plan;
	p = SPI_prepare(sql, nargs, (Oid *) types);
	if (p == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "SPI_keepplan failed for \"%s\"", sql);
	*plan = p;
	return p;
}

/* Start a transaction with SPI and a snapshot, showing activity. */
void
bf_txn_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (activity != NULL)
		pgstat_report_activity(STATE_RUNNING, activity);
}

/* Finish SPI, pop the snapshot and commit. */
void
bf_txn_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * Turn the planner methods in off[0..noff-1] (settings such as
 * "enable_sort") off until bf_planner_off_end(nest), like the SET clause of
 * a function; returns the GUC nesting level to end.  A kept plan is
 * planned at execution (custom plans, the generic plan, and again after an
 * invalidation), so the plans of statements that must not follow the
 * statistics of a table that changes fast are fixed this way.  An error in
 * between is cleaned up by the transaction's abort.
 */
int
bf_planner_off_begin(const char *const *off, int noff)
{
	int			nest = NewGUCNestLevel();

	for (int i = 0; i < noff; i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

/* Restore the planner settings bf_planner_off_begin changed. */
void
bf_planner_off_end(int nest)
{
	AtEOXact_GUC(true, nest);
}

/*
 * Execute a kept plan with the planner methods in off[0..noff-1] turned
 * off for this execution only (bf_planner_off_begin).  Returns
 * SPI_execute_plan's code.
 */
int
bf_execute_plan_without(SPIPlanPtr plan, Datum *args, const char *nulls,
						const char *const *off, int noff)
{
	int			nest = bf_planner_off_begin(off, noff);
	int			rc;

	rc = SPI_execute_plan(plan, args, nulls, false, 0);
	bf_planner_off_end(nest);
	return rc;
}
