/*-------------------------------------------------------------------------
 *
 * run_control.c
 *	  Handles on runs and workflows beyond start, wait and cancel:
 *	  bf_pause and bf_resume, bf_purge and the launcher's run retention
 *	  (batchflow.run_retention), bf_unregister, and the hint that names
 *	  the closest registered workflows when bf_start is given an unknown
 *	  name.
 *
 *	  Pause is a claim-time condition: a run whose status is 'paused' has
 *	  its running loops left out of the workers' list of open loops and out
 *	  of the HTTP and batch refills (claim.c, short_items.c), so nothing new
 *	  of it starts, while items already executing finish and are recorded
 *	  as usual.  The status is in batchflow.run, so a paused run stays
 *	  paused across a restart, and bf_wait keeps waiting for it.
 *
 *	  Like the other bf_* functions these run as their caller, check that
 *	  the caller may act on each run or workflow, and write as the
 *	  extension owner.  bf_purge deletes only runs the caller may see.
 *
 * IDENTIFICATION
 *	  src/run_control.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "wake_commit.h"
#include "run_control.h"
#include "security.h"
#include "spi_util.h"

/* batchflow.run_retention: at most ten years, in seconds. */
#define BF_MAX_RUN_RETENTION_S	(10 * 365 * 86400)
/* Runs the launcher deletes per sweep. */
#define BF_PURGE_BATCH			100
/* How many close names the bf_start hint offers. */
#define BF_HINT_NAMES			3

int			bf_run_retention_s = 0;

PG_FUNCTION_INFO_V1(bf_pause);
PG_FUNCTION_INFO_V1(bf_resume);
PG_FUNCTION_INFO_V1(bf_purge);
PG_FUNCTION_INFO_V1(bf_unregister);

static bool bf_set_run_status(int64 run_id, const char *from, const char *to);
static int64 bf_delete_runs(Datum older_than, Oid caller, int limit);
static int	bf_edit_distance(const char *a, const char *b, int max);

/* Declare batchflow.run_retention. */
void
bf_run_control_define_gucs(void)
{
	DefineCustomIntVariable("batchflow.run_retention",
							"How long finished runs are kept before the launcher deletes them.",
							"Whole runs go, with their loops, items and errors, once they finished longer ago than this.  0 (the default) keeps them forever; bf_purge deletes them on demand.",
							&bf_run_retention_s,
							0, 0, BF_MAX_RUN_RETENTION_S,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* Set a run's status from one value to another; false if it was not "from". */
static bool
bf_set_run_status(int64 run_id, const char *from, const char *to)
{
	Oid			argtypes[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		args[3];

	args[0] = Int64GetDatum(run_id);
	args[1] = CStringGetTextDatum(from);
	args[2] = CStringGetTextDatum(to);
	if (SPI_execute_with_args("UPDATE batchflow.run SET status = $3"
							  " WHERE id = $1 AND status = $2 AND finished_at IS NULL",
							  3, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not set the status of run " INT64_FORMAT, run_id);
	return SPI_processed > 0;
}

/*
 * bf_pause(run bigint) returns boolean
 *
 * No new item of the run starts from the commit on; items executing now
 * finish.  False if the run was not running (finished, or already paused).
 */
Datum
bf_pause(PG_FUNCTION_ARGS)
{
	int64		run_id = PG_GETARG_INT64(0);
	BfSavedUser saved;
	bool		paused;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_become_admin(&saved);
	(void) bf_run_lock_checked(run_id, saved.userid);
	paused = bf_set_run_status(run_id, "running", "paused");
	bf_restore_user(&saved);
	SPI_finish();
	PG_RETURN_BOOL(paused);
}

/*
 * bf_resume(run bigint) returns boolean
 *
 * A paused run carries on where it stopped; the workers are woken at
 * commit.  False if the run was not paused.
 */
Datum
bf_resume(PG_FUNCTION_ARGS)
{
	int64		run_id = PG_GETARG_INT64(0);
	BfSavedUser saved;
	bool		resumed;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_become_admin(&saved);
	(void) bf_run_lock_checked(run_id, saved.userid);
	resumed = bf_set_run_status(run_id, "paused", "running");
	if (resumed)
		bf_wake_on_commit();
	bf_restore_user(&saved);
	SPI_finish();
	PG_RETURN_BOOL(resumed);
}

/*
 * Delete up to limit (0: no limit) finished runs that finished before
 * now() - older_than and that caller may act on (InvalidOid: all), with
 * their loops, items, errors and progress rows (inside SPI, as the
 * extension owner).  Runs locked by someone else (bf_retry re-opening one)
 * are left for later.  Returns how many runs were deleted.
 */
static int64
bf_delete_runs(Datum older_than, Oid caller, int limit)
{
	Oid			argtypes[2] = {INTERVALOID, INT4OID};
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	int64	   *ids;
	int64		n = 0;
	Oid			last_owner = InvalidOid;
	bool		last_ok = false;
	Datum		arr;
	Oid			arrtype = INT8ARRAYOID;

	args[0] = older_than;
	args[1] = Int32GetDatum(limit);
	nulls[1] = limit > 0 ? ' ' : 'n';
	if (SPI_execute_with_args("SELECT id, owner FROM batchflow.run"
							  " WHERE finished_at < now() - $1"
							  " ORDER BY owner, id LIMIT $2"
							  " FOR UPDATE SKIP LOCKED",
							  2, argtypes, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list finished runs");
	ids = palloc(sizeof(int64) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));

		/* Rows come ordered by owner: one membership check per owner. */
		if (owner != last_owner || i == 0)
		{
			last_owner = owner;
			last_ok = !OidIsValid(caller) || bf_role_can_manage(caller, owner);
		}
		if (last_ok)
			ids[n++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (n == 0)
		return 0;

	{
		Datum	   *elems = palloc(sizeof(Datum) * n);

		for (int64 i = 0; i < n; i++)
			elems[i] = Int64GetDatum(ids[i]);
		arr = PointerGetDatum(construct_array(elems, (int) n, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	}
	if (SPI_execute_with_args("DELETE FROM batchflow.run WHERE id = ANY ($1)",
							  1, &arrtype, &arr, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete finished runs");
	return (int64) SPI_processed;
}

/*
 * bf_purge(older_than interval) returns bigint
 *
 * Deletes the finished runs that finished before now() - older_than and
 * that the caller may see, with everything below them; returns how many.
 */
Datum
bf_purge(PG_FUNCTION_ARGS)
{
	Interval   *older_than = PG_GETARG_INTERVAL_P(0);
	BfSavedUser saved;
	int64		n;

	if (older_than->time < 0 || older_than->day < 0 || older_than->month < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than must not be negative"),
				 errhint("Pass an interval such as '30 days'; '0' deletes every finished run you may see.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_become_admin(&saved);
	n = bf_delete_runs(IntervalPGetDatum(older_than), saved.userid, 0);
	bf_restore_user(&saved);
	SPI_finish();
	PG_RETURN_INT64(n);
}

/*
 * The launcher's share of batchflow.run_retention: delete a batch of runs
 * finished longer ago, in a transaction of its own.
 */
void
bf_run_retention_sweep(void)
{
	Interval	older_than;
	int64		n;

	if (bf_run_retention_s <= 0)
		return;
	memset(&older_than, 0, sizeof(older_than));
	older_than.time = (int64) bf_run_retention_s * USECS_PER_SEC;

	bf_txn_begin("batchflow: deleting old runs");
	n = bf_delete_runs(IntervalPGetDatum(&older_than), InvalidOid, BF_PURGE_BATCH);
	bf_txn_end();
	if (n > 0)
		ereport(DEBUG1,
				(errmsg("batchflow deleted " INT64_FORMAT " runs past batchflow.run_retention", n)));
}

/*
 * bf_unregister(workflow text) returns boolean
 *
 * Removes a workflow, its versions and its finished runs.  Refuses with
 * 55006 while one of its runs is not finished, and 42501 for a workflow
 * the caller may not manage.
 */
Datum
bf_unregister(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	char	   *cname = text_to_cstring(name);
	Oid			argtype = TEXTOID;
	Datum		arg = PointerGetDatum(name);
	BfSavedUser saved;
	bool		isnull;
	Oid			owner;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_become_admin(&saved);

	/* The lock keeps bf_register from adding a version meanwhile. */
	if (SPI_execute_with_args("SELECT owner FROM batchflow.workflow WHERE name = $1 FOR UPDATE",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up workflow");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", cname),
				 errhint("%s", bf_workflow_name_hint(cname, saved.userid))));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	if (!bf_role_can_manage(saved.userid, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow \"%s\"", cname),
				 errdetail("The workflow was registered by another role."),
				 errhint("Only the role that registered it, roles that have its privileges, superusers and members of batchflow_admin may remove it.")));

	if (SPI_execute_with_args("SELECT r.id, r.status FROM batchflow.run r"
							  "  JOIN batchflow.workflow_version v ON v.id = r.version_id"
							  " WHERE v.workflow = $1 AND r.finished_at IS NULL"
							  " ORDER BY r.id LIMIT 1",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the runs of workflow \"%s\"", cname);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("workflow \"%s\" has a run that is not finished", cname),
				 errdetail("Run %s is %s.",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
				 errhint("Wait for it with bf_wait, or stop it with bf_cancel, then unregister the workflow.")));

	if (SPI_execute_with_args("DELETE FROM batchflow.run WHERE version_id IN"
							  " (SELECT id FROM batchflow.workflow_version WHERE workflow = $1)",
							  1, &argtype, &arg, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete the runs of workflow \"%s\"", cname);
	if (SPI_execute_with_args("DELETE FROM batchflow.workflow WHERE name = $1",
							  1, &argtype, &arg, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete workflow \"%s\"", cname);

	bf_restore_user(&saved);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/*
 * Levenshtein distance between a and b (case-insensitive, bytes), or
 * max + 1 as soon as it is known to exceed max.
 */
static int
bf_edit_distance(const char *a, const char *b, int max)
{
	int			la = strlen(a);
	int			lb = strlen(b);
	int		   *prev;
	int		   *cur;

	if (abs(la - lb) > max)
		return max + 1;
	prev = palloc(sizeof(int) * (lb + 1));
	cur = palloc(sizeof(int) * (lb + 1));
	for (int j = 0; j <= lb; j++)
		prev[j] = j;
	for (int i = 1; i <= la; i++)
	{
		int			rowmin;
		int		   *tmp;

		cur[0] = i;
		rowmin = cur[0];
		for (int j = 1; j <= lb; j++)
		{
			int			cost = pg_tolower((unsigned char) a[i - 1]) ==
				pg_tolower((unsigned char) b[j - 1]) ? 0 : 1;

			cur[j] = Min(Min(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + cost);
			rowmin = Min(rowmin, cur[j]);
		}
		if (rowmin > max)
			return max + 1;
		tmp = prev;
		prev = cur;
		cur = tmp;
	}
	return prev[lb];
}

/*
 * The hint for an unknown workflow name: the closest registered names the
 * caller may use (edit distance at most a third of the name, and at least
 * 2), or how to list them (inside SPI, as the extension owner).
 */
char *
bf_workflow_name_hint(const char *name, Oid caller)
{
	int			max = Max(2, (int) strlen(name) / 3);
	char	   *best[BF_HINT_NAMES];
	int			bestd[BF_HINT_NAMES];
	int			nbest = 0;
	StringInfoData hint;

	if (SPI_execute("SELECT name, owner FROM batchflow.workflow ORDER BY name", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list workflows");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *cand = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		Oid			owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));
		int			d = bf_edit_distance(name, cand, max);
		int			pos;

		if (d > max || !bf_role_can_manage(caller, owner))
			continue;
		/* Insert into the few best, ordered by distance, then name. */
		for (pos = nbest; pos > 0 && bestd[pos - 1] > d; pos--)
			if (pos < BF_HINT_NAMES)
			{
				best[pos] = best[pos - 1];
				bestd[pos] = bestd[pos - 1];
			}
		if (pos < BF_HINT_NAMES)
		{
			best[pos] = cand;
			bestd[pos] = d;
			nbest = Min(nbest + 1, BF_HINT_NAMES);
		}
	}

	initStringInfo(&hint);
	if (nbest == 0)
		appendStringInfoString(&hint, "Register it first with bf_register(name, definition); SELECT name FROM batchflow.workflows lists the registered workflows.");
	else
	{
		appendStringInfoString(&hint, "Did you mean ");
		for (int i = 0; i < nbest; i++)
			appendStringInfo(&hint, "%s\"%s\"",
							 i == 0 ? "" : (i == nbest - 1 ? " or " : ", "), best[i]);
		appendStringInfoString(&hint, "? SELECT name FROM batchflow.workflows lists the registered workflows.");
	}
	return hint.data;
}
