/*-------------------------------------------------------------------------
 *
 * activity_workflow.c
 *	  The workflow activity: an item whose work is a whole run of another
 *	  workflow, {"activity": "workflow", "workflow": "name", "input": {...}}.
 *
 *	  A worker that claims such an item starts the child run in the claim
 *	  transaction (batchflow._start_child: the run, with parent_run, and its
 *	  first node's items), records it in item.child_run, marks the item
 *	  'running' and commits.  From then on the item holds no worker, no slot
 *	  lock and no transaction; the transaction that gives the child run its
 *	  final status completes the item (trigger run_child_ended, part 26).
 *
 *	  The cap: a loop whose child is a workflow counts its items 'running'
 *	  (children in flight) against its cap.  Claims of such a loop all take
 *	  the loop's slot lock 0, so they happen one at a time, and start a
 *	  child only while fewer than cap items are running (bf_children_room):
 *	  each claim sees every earlier claim's commit, so the count is exact.
 *
 *	  A claimed item that already has a child run (after bf_retry of the
 *	  parent, or a retry under errorStrategy "retry") does not start a new
 *	  one: a failed or cancelled child is retried with bf_retry (only its
 *	  failed and skipped items run again), a child still running is waited
 *	  for again, a succeeded one completes the item at once.
 *
 *	  bf_cancel of a parent cancels its child runs (part 26,
 *	  _cancel_children); with force, the items executing in every
 *	  unfinished descendant run are interrupted too, at the same commit
 *	  (bf_force_cancel_descendants, force_cancel.c).
 *
 *	  A workflow may not start itself, directly or through others: before
 *	  starting a child, the chain of parent runs is followed, and a child of
 *	  a workflow already on it fails the item (for good, under every error
 *	  strategy) with an error that shows the chain.
 *
 * IDENTIFICATION
 *	  src/activity_workflow.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "batchflow.h"
#include "activity_workflow.h"
#include "api.h"
#include "http_template.h"
#include "item_result.h"
#include "run_control.h"
#include "security.h"
#include "spi_util.h"

static const char *const workflow_keys[] = {"id", "type", "activity", "description",
"output", "workflow", "input", NULL};

static SPIPlanPtr running_plan = NULL;


static bool bf_workflow_start(BfClaim *claim, BfItemResult *result);
static int64 bf_workflow_start_child(BfClaim *claim, bool *fatal);

/*
 * bf_check_workflow_activity
 *	  Validate the properties of a workflow activity at registration.
 */
void
bf_check_workflow_activity(JsonbContainer *node, const char *what)
{
	JsonbIterator *it = JsonbIteratorInit(node);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		bool		known = false;

		if (tok != WJB_KEY)
			continue;
		for (int i = 0; workflow_keys[i] != NULL; i++)
			if ((int) strlen(workflow_keys[i]) == v.val.string.len &&
				strncmp(workflow_keys[i], v.val.string.val, v.val.string.len) == 0)
				known = true;
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown property \"%.*s\"", what,
							v.val.string.len, v.val.string.val),
					 errdetail("Unknown properties are rejected so that a misspelt one is not silently ignored."),
					 errhint("Allowed properties here are \"id\", \"type\", \"activity\", \"description\", \"output\", \"workflow\" and \"input\".")));
	}

	if (getKeyJsonValueFromContainer(node, "workflow", 8, &v) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: missing property \"workflow\"", what),
				 errdetail("\"workflow\" is required here."),
				 errhint("Name the workflow to run for each item, e.g. \"workflow\": \"build_one\".")));
	if (v.type != jbvString || v.val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"workflow\" must be a non-empty string", what),
				 errhint("Name the workflow to run for each item, e.g. \"workflow\": \"build_one\".")));
	if (getKeyJsonValueFromContainer(node, "input", 5, &v) != NULL &&
		!(v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"input\" must be an object", what),
				 errdetail("It becomes the child run's input, which is an object."),
				 errhint("Write the input as {\"key\": \"{{item.field}}\", ...}, or leave it out to pass the item itself.")));
}

/*
 * bf_check_loop_workflow_child
 *	  A loop whose children include a workflow activity must have it as its
 *	  only child: the item is complete when the child run is.
 */
void
bf_check_loop_workflow_child(JsonbContainer *children, const char *what)
{
	JsonbIterator *it = JsonbIteratorInit(children);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;
	bool		workflow = false;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		JsonbValue	a;

		if (tok != WJB_ELEM)
			continue;
		n++;
		if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data) &&
			getKeyJsonValueFromContainer(v.val.binary.data, "activity", 8, &a) != NULL &&
			a.type == jbvString && a.val.string.len == 8 &&
			strncmp(a.val.string.val, "workflow", 8) == 0)
			workflow = true;
	}
	if (workflow && n > 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s: a workflow activity must be the loop's only child", what),
				 errdetail("The loop has %d children; an item whose child is a workflow is complete when the child run is.", n),
				 errhint("Move the other activities into the child workflow.")));
}

/*
 * May a claim of loop_ref start one more child?  Called with the loop's
 * slot lock 0 held (inside SPI): true while fewer than cap items of the
 * loop are running.
 */
bool
bf_children_room(int64 loop_ref, int cap)
{
	Datum		arg = Int64GetDatum(loop_ref);
	bool		isnull;

	if (running_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		bf_keep_plan(&running_plan, "SELECT count(*) FROM batchflow.item"
									" WHERE loop_ref = $1 AND status = 'running'", 1, types);
	}
	if (SPI_execute_plan(running_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the child runs of loop " INT64_FORMAT, loop_ref);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull)) < cap;
}

/*
 * Start (or resume) the child run of a claimed item, in the claim's
 * transaction (inside SPI).  If no child could be started, the attempt's
 * failure is recorded as for any item.
 */
void
bf_workflow_take(BfClaim *claim)
{
	BfItemResult result;

	memset(&result, 0, sizeof(result));
	result.output_isnull = true;
	if (!bf_workflow_start(claim, &result))
	{
		(void) bf_record_result(claim, &result);
	}
}

/*
 * Resume the item's earlier child, or start a new one: true when the item
 * now waits for a child run.  Otherwise *result is the attempt's outcome,
 * for the caller to record.
 */
static bool
bf_workflow_start(BfClaim *claim, BfItemResult *result)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		args[2];
	bool		isnull;
	Datum		child;
	volatile bool fatal = false;
	volatile bool started = false;

	/* An earlier child: wait for it again, or retry it. */
	args[0] = Int64GetDatum(claim->loop->loop_ref);
	args[1] = Int32GetDatum(claim->idx);
	if (SPI_execute_with_args("SELECT i.child_run, r.status FROM batchflow.item i"
							  "  JOIN batchflow.run r ON r.id = i.child_run"
							  " WHERE i.loop_ref = $1 AND i.idx = $2",
							  2, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the child run of an item");
	if (SPI_processed == 1)
	{
		char	   *status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		int64		requeued = 1;

		child = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (strcmp(status, "succeeded") == 0)
		{
			/* It succeeded after all: so does the item, now. */
			result->ok = true;
			result->output = DirectFunctionCall1(jsonb_in,
												 CStringGetDatum(psprintf("{\"run\": " INT64_FORMAT ", \"status\": \"succeeded\"}",
																		  DatumGetInt64(child))));
			result->output_isnull = false;
			return false;
		}
		if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0)
			requeued = DatumGetInt64(DirectFunctionCall1(bf_retry, child));
		if (requeued > 0)
		{
			Oid			t3[3] = {INT8OID, INT4OID, INT8OID};
			Datum		a3[3] = {args[0], args[1], child};

			if (SPI_execute_with_args("UPDATE batchflow.item SET status = 'running', started_at = clock_timestamp(),"
									  "       not_before = NULL, worker_pid = NULL"
									  " WHERE loop_ref = $1 AND idx = $2",
									  2, t3, a3, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not resume the item of child run " INT64_FORMAT, DatumGetInt64(child));
			return true;
		}
		/* Nothing of the child to retry (it failed before any item): a new one. */
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		(void) bf_workflow_start_child(claim, (bool *) &fatal);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		started = true;
	}
	PG_CATCH();
	{
		bf_result_from_error(result, oldcxt, oldowner, claim->loop->children[0].id);
		result->fatal = fatal;
	}
	PG_END_TRY();
	return started;
}

/*
 * Start the child run: check the workflow, the owner's right to use it and
 * that it would not start itself; template the input; create the run.
 * Errors are the attempt's failure; *fatal is set first for those that no
 * retry can mend.
 */
static int64
bf_workflow_start_child(BfClaim *claim, bool *fatal)
{
	BfLoopInfo *loop = claim->loop;
	BfChild    *wf = &loop->children[0];
	JsonbValue	v;
	char	   *name;
	Datum		input;
	Oid			t[2] = {TEXTOID, INT8OID};
	Datum		a[2];
	bool		isnull;
	int32		version_id;
	Oid			wf_owner;
	int64		child;

	if (getKeyJsonValueFromContainer(&wf->node->root, "workflow", 8, &v) == NULL ||
		v.type != jbvString)
		elog(ERROR, "workflow activity \"%s\" names no workflow", wf->id);
	name = pnstrdup(v.val.string.val, v.val.string.len);

	/* The input: the templated "input", or the item itself. */
	if (getKeyJsonValueFromContainer(&wf->node->root, "input", 5, &v) != NULL &&
		v.type == jbvBinary)
	{
		BfTemplateContext ctx;
		char	   *error = NULL;
		Jsonb	   *body = JsonbValueToJsonb(&v);
		Jsonb	   *filled;

		ctx.item = claim->item_isnull ? NULL : DatumGetJsonbP(claim->item);
		ctx.index = claim->idx;
		ctx.run_id = loop->run_id;
		filled = bf_template_json(body, &ctx, &error);
		if (filled == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("workflow activity \"%s\": %s", wf->id, error)));
		input = JsonbPGetDatum(filled);
	}
	else if (!claim->item_isnull)
		input = claim->item;
	else
		input = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));

	a[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT v.id, w.owner FROM batchflow.workflow w"
							  "  JOIN batchflow.workflow_version v ON v.workflow = w.name"
							  " WHERE w.name = $1 ORDER BY v.version DESC LIMIT 1",
							  1, t, a, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up workflow \"%s\"", name);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" does not exist", name),
				 errhint("Register it with bf_register before starting runs that use it.")));
	version_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	wf_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (!bf_role_can_manage(loop->owner, wf_owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow \"%s\"", name),
				 errdetail("The role that started run " INT64_FORMAT " may not start runs of a workflow registered by another role.",
						   loop->run_id),
				 errhint("Register your own copy under another name, or ask its owner to grant you its role.")));

	/* A workflow may not start itself, directly or through others. */
	a[1] = Int64GetDatum(loop->run_id);
	if (SPI_execute_with_args("WITH RECURSIVE up(id, parent, workflow, depth) AS ("
							  "    SELECT r.id, r.parent_run, v.workflow, 1"
							  "      FROM batchflow.run r JOIN batchflow.workflow_version v ON v.id = r.version_id"
							  "     WHERE r.id = $2"
							  "  UNION ALL"
							  "    SELECT r.id, r.parent_run, v.workflow, up.depth + 1"
							  "      FROM up JOIN batchflow.run r ON r.id = up.parent"
							  "      JOIN batchflow.workflow_version v ON v.id = r.version_id"
							  "     WHERE up.depth < 1000)"
							  " SELECT string_agg(format('%s (run %s)', workflow, id), ' -> ' ORDER BY depth DESC)"
							  "   FROM up HAVING bool_or(workflow = $1)",
							  2, t, a, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not follow the parents of run " INT64_FORMAT, loop->run_id);
	if (SPI_processed == 1)
	{
		*fatal = true;
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_RECURSION),
				 errmsg("workflow \"%s\" would start itself: %s -> %s", name,
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), name),
				 errhint("A workflow activity may not start a workflow that is already running above it.")));
	}

	{
		Oid			st[5] = {INT8OID, INT8OID, INT4OID, INT4OID, JSONBOID};
		Datum		sa[5] = {Int64GetDatum(loop->run_id), Int64GetDatum(loop->loop_ref),
		Int32GetDatum(claim->idx), Int32GetDatum(version_id), input};

		if (SPI_execute_with_args("SELECT batchflow._start_child($1, $2, $3, $4, $5)",
								  5, st, sa, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not start a run of workflow \"%s\"", name);
	}
	child = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return child;
}
