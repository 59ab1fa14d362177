/*-------------------------------------------------------------------------
 *
 * loop_start.c
 *	  Moving a run to its next top-level node (batchflow._advance): create
 *	  that node's loop and items, or finish the run.
 *
 *	  A run's top-level nodes run one after another.  When a run starts
 *	  (bf_start, or a workflow activity starting a child run) and whenever
 *	  one of its loops closes (loop_close.c), bf_advance looks at the nodes
 *	  from the given index on and does the first of these that applies:
 *
 *	  - past the last node: the run succeeded;
 *	  - a node reached before (bf_retry re-opened an earlier loop): an open
 *	    loop is waited for, a closed one is passed over;
 *	  - an activity: a loop row of kind 'activity' with its one item;
 *	  - a loop: its input source is resolved now that it is reached (a
 *	    static array, a run variable, an earlier activity's output).  Null
 *	    or missing means no items: the loop is created succeeded and the
 *	    run moves on.  Anything but an array fails the run, naming the
 *	    source.  Too many items (batchflow.max_items_per_run over the whole
 *	    run) or one item too large (batchflow.max_item_size) is an error of
 *	    bf_start when the walk began at node 0, and fails the run when a
 *	    worker reached the node.  Query and keyRanges sources and large
 *	    arrays are handed to batchflow._lazy_loop, whose items the workers
 *	    materialise (part 25_bigbatch.sql); a dependsOn graph is checked
 *	    and counted by batchflow._deps_start (part 25_deps.sql).  Then the
 *	    loop row, and all its items in one INSERT.
 *
 *	  Why this is safe.  Everything happens in the caller's transaction,
 *	  and the run's row is locked first (FOR UPDATE): two sessions that
 *	  advance the same run are serialised, and the second one's statements,
 *	  each with a snapshot taken after the lock, see the first one's loop
 *	  (the "reached before" test) or the run finished; so each node gets at
 *	  most one loop per run.  A loop and its items are created in one
 *	  transaction, so nobody sees a loop without its items.  Workers are
 *	  woken only when that transaction commits: a run whose bf_start rolls
 *	  back never existed for them.  Item data reaches SQL only as
 *	  parameters of kept plans.
 *
 *	  Until 0.2.0 this was a PL/pgSQL function.  In C the hot path (every
 *	  bf_start, every loop a run reaches) runs kept plans directly, and a
 *	  new session no longer compiles 170 lines of PL/pgSQL before its first
 *	  bf_start.  bf_start passes new_run: a run inserted by this
 *	  transaction has no loop yet, so the "reached before" lookup and the
 *	  run's item total (always 0 then) are skipped.
 *
 * IDENTIFICATION
 *	  src/loop_start.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "loop_start.h"
#include "wake_commit.h"
#include "run_limits.h"
#include "spi_util.h"

PG_FUNCTION_INFO_V1(bf_sql_advance);

/* What a loop node's input source resolved to. */
typedef struct BfSource
{
	Jsonb	   *items;			/* the array; NULL when it has no items */
	int			n;				/* its number of elements */
	char	   *name;			/* 'static', 'variable "x"' or 'activity "y"' */
} BfSource;

/* The kept plans, prepared on first use (bf_keep_plan). */
static SPIPlanPtr run_plan = NULL;
static SPIPlanPtr reached_plan = NULL;
static SPIPlanPtr end_plan = NULL;
static SPIPlanPtr current_plan = NULL;
static SPIPlanPtr activity_plan = NULL;
static SPIPlanPtr activity_item_plan = NULL;
static SPIPlanPtr run_total_plan = NULL;
static SPIPlanPtr lazy_plan = NULL;
static SPIPlanPtr loop_plan = NULL;
static SPIPlanPtr deps_plan = NULL;
static SPIPlanPtr items_plan = NULL;

static Jsonb *bf_json_get(Jsonb *obj, const char *key);
static char *bf_json_get_text(Jsonb *obj, const char *key);
static bool bf_json_has(Jsonb *j, const char *key);
static const char *bf_or_empty(const char *s);
static void bf_run_end(int64 run_id, int32 k, const char *status, const char *error);
static void bf_run_at(int64 run_id, int32 k, int32 current_node);
static bool bf_node_reached(int64 run_id, int32 k, const char *node_id, bool *open);
static void bf_start_activity(int64 run_id, int32 k, int32 current_node, Jsonb *node);
static char *bf_resolve_source(Jsonb *node, Jsonb *src, Datum vars, bool vars_null,
							   Datum outputs, bool outputs_null, BfSource *out);
static bool bf_check_limits(int64 run_id, int32 k, int32 from, bool new_run,
							const char *node_id, const BfSource *src);
static bool bf_start_lazy(int64 run_id, int32 k, Jsonb *node, int n, Oid owner, bool raise);
static int64 bf_insert_loop(int64 run_id, int32 k, Jsonb *node, int n);
static bool bf_insert_items(int64 run_id, int32 from, int64 loop_ref, Jsonb *node,
							Jsonb *items);

/* obj -> key, as the jsonb operator: NULL if obj is no object or lacks key. */
static Jsonb *
bf_json_get(Jsonb *obj, const char *key)
{
	JsonbValue	vbuf;
	JsonbValue *v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	v = getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &vbuf);
	return v != NULL ? JsonbValueToJsonb(v) : NULL;
}

/* obj ->> key, as the jsonb operator: JSON null is NULL, strings unquoted. */
static char *
bf_json_get_text(Jsonb *obj, const char *key)
{
	JsonbValue	vbuf;
	JsonbValue *v;
	Jsonb	   *j;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	v = getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &vbuf);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	j = JsonbValueToJsonb(v);
	return JsonbToCString(NULL, &j->root, VARSIZE(j));
}

/* j ? key, as the jsonb operator (false for SQL NULL). */
static bool
bf_json_has(Jsonb *j, const char *key)
{
	if (j == NULL)
		return false;
	return DatumGetBool(DirectFunctionCall2(jsonb_exists, JsonbPGetDatum(j),
											CStringGetTextDatum(key)));
}

/* What format('%s', s) shows: NULL is the empty string. */
static const char *
bf_or_empty(const char *s)
{
	return s != NULL ? s : "";
}

/*
 * The run ends at node k with the given status (and error, which a NULL
 * leaves as it was); bf_wait callers wake at commit.
 */
static void
bf_run_end(int64 run_id, int32 k, const char *status, const char *error)
{
	static const Oid types[4] = {INT8OID, INT4OID, TEXTOID, TEXTOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	args[0] = Int64GetDatum(run_id);
	args[1] = Int32GetDatum(k);
	args[2] = CStringGetTextDatum(status);
	if (error != NULL)
		args[3] = CStringGetTextDatum(error);
	else
	{
		args[3] = (Datum) 0;
		nulls[3] = 'n';
	}
	if (SPI_execute_plan(bf_keep_plan(&end_plan,
									  "UPDATE batchflow.run"
									  "   SET status = $3, finished_at = pg_catalog.clock_timestamp(),"
									  "       current_node = $2, error = coalesce($4, error)"
									  " WHERE id = $1",
									  4, types),
						 args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not end run " INT64_FORMAT, run_id);
	bf_runs_finished_on_commit();
}

/*
 * The run is at node k (its loop is open).  Nothing to write when it was
 * there already (a new run at its first node): an update of the run's row
 * costs a tenth of a bf_start.
 */
static void
bf_run_at(int64 run_id, int32 k, int32 current_node)
{
	static const Oid types[2] = {INT8OID, INT4OID};
	Datum		args[2] = {Int64GetDatum(run_id), Int32GetDatum(k)};

	if (k == current_node)
		return;
	if (SPI_execute_plan(bf_keep_plan(&current_plan,
									  "UPDATE batchflow.run SET current_node = $2 WHERE id = $1",
									  2, types),
						 args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update run " INT64_FORMAT, run_id);
}

/*
 * Has the run a loop for node node_id already (bf_retry re-opened an
 * earlier one)?  *open says whether it is still open.
 */
static bool
bf_node_reached(int64 run_id, int32 k, const char *node_id, bool *open)
{
	static const Oid types[2] = {INT8OID, TEXTOID};
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	bool		isnull;

	args[0] = Int64GetDatum(run_id);
	if (node_id != NULL)
		args[1] = CStringGetTextDatum(node_id);
	else
	{
		args[1] = (Datum) 0;
		nulls[1] = 'n';
	}
	if (SPI_execute_plan(bf_keep_plan(&reached_plan,
									  "SELECT finished_at IS NULL FROM batchflow.loop"
									  " WHERE run_id = $1 AND node_id = $2",
									  2, types),
						 args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the loops of run " INT64_FORMAT, run_id);
	if (SPI_processed == 0)
		return false;
	*open = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
	return true;
}

/* An activity node: a loop of kind 'activity' with its one item. */
static void
bf_start_activity(int64 run_id, int32 k, int32 current_node, Jsonb *node)
{
	static const Oid types[4] = {INT8OID, INT4OID, JSONBOID, TIMESTAMPTZOID};
	Datum		args[4];
	bool		isnull;
	int64		loop_ref;

	args[0] = Int64GetDatum(run_id);
	args[1] = Int32GetDatum(k);
	args[2] = JsonbPGetDatum(node);
	args[3] = TimestampTzGetDatum(GetCurrentTimestamp());
	if (SPI_execute_plan(bf_keep_plan(&activity_plan,
									  "INSERT INTO batchflow.loop (run_id, node_index, node_id, kind, node,"
									  "                            sequential, concurrency, total, started_at)"
									  " VALUES ($1, $2, $3 ->> 'id', 'activity', $3, true, 1, 1, $4)"
									  " RETURNING id",
									  4, types),
						 args, NULL, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not create the loop of node %d of run " INT64_FORMAT, k, run_id);
	loop_ref = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										   1, &isnull));
	args[0] = Int64GetDatum(loop_ref);
	args[1] = Int64GetDatum(run_id);
	if (SPI_execute_plan(bf_keep_plan(&activity_item_plan,
									  "INSERT INTO batchflow.item (loop_ref, idx, run_id, item)"
									  " VALUES ($1, 0, $2, NULL)",
									  2, (Oid[]) {INT8OID, INT8OID}),
						 args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not create the item of node %d of run " INT64_FORMAT, k, run_id);
	bf_run_at(run_id, k, current_node);
	bf_wake_lead_on_commit();
}

/*
 * Resolve loop node's input source src against the run's variables and
 * outputs.  Returns NULL with *out filled in, or the run's error when the
 * source is not an array (nor null, nor missing).
 */
static char *
bf_resolve_source(Jsonb *node, Jsonb *src, Datum vars, bool vars_null,
				  Datum outputs, bool outputs_null, BfSource *out)
{
	Jsonb	   *items;
	char	   *type;

	if (bf_json_has(src, "static"))
	{
		items = bf_json_get(src, "static");
		out->name = "static";
	}
	else if (bf_json_has(src, "variable"))
	{
		char	   *name = bf_json_get_text(src, "variable");

		items = (name == NULL || vars_null) ? NULL :
			bf_json_get(DatumGetJsonbP(vars), name);
		out->name = psprintf("variable \"%s\"", bf_or_empty(name));
	}
	else
	{
		char	   *name = bf_json_get_text(src, "activity");

		items = (name == NULL || outputs_null) ? NULL :
			bf_json_get(DatumGetJsonbP(outputs), name);
		out->name = psprintf("activity \"%s\"", bf_or_empty(name));
	}

	out->items = NULL;
	out->n = 0;
	if (items == NULL)
		return NULL;
	type = text_to_cstring(DatumGetTextPP(DirectFunctionCall1(jsonb_typeof,
															  JsonbPGetDatum(items))));
	if (strcmp(type, "null") == 0)
		return NULL;
	if (strcmp(type, "array") != 0)
		return psprintf("node \"%s\": inputSource %s is a JSON %s, not an array",
						bf_or_empty(bf_json_get_text(node, "id")), out->name, type);
	out->items = items;
	out->n = JB_ROOT_COUNT(items);
	return NULL;
}

/*
 * The limits on a loop about to be created at node k: true if within
 * them.  Otherwise an error of bf_start when the walk began at node 0
 * (nothing is created), or the run fails with the same text, and false.
 */
static bool
bf_check_limits(int64 run_id, int32 k, int32 from, bool new_run,
				const char *node_id, const BfSource *src)
{
	int64		total = src->n;
	int64		limit;
	char	   *msg = NULL;
	char	   *detail = NULL;
	char	   *hint = NULL;

	/* A new run's loops so far are empty ones (any other ends the walk). */
	if (!new_run)
	{
		Datum		arg = Int64GetDatum(run_id);
		bool		isnull;

		if (SPI_execute_plan(bf_keep_plan(&run_total_plan,
										  "SELECT coalesce(sum(total), 0)::bigint FROM batchflow.loop"
										  " WHERE run_id = $1",
										  1, (Oid[]) {INT8OID}),
							 &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not count the items of run " INT64_FORMAT, run_id);
		total += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 1, &isnull));
	}

	if (total > bf_max_items_per_run)
	{
		msg = psprintf("too many items for one run: node \"%s\" would bring the run to " INT64_FORMAT " items",
					   bf_or_empty(node_id), total);
		detail = psprintf("inputSource %s has %d items; the limit batchflow.max_items_per_run is %d items per run.",
						  src->name, src->n, bf_max_items_per_run);
		hint = "Split the input over several runs, or have a superuser raise batchflow.max_items_per_run.";
	}
	else if (src->items != NULL &&
			 (int64) VARSIZE(src->items) > (limit = (int64) bf_max_item_kb * 1024))
	{
		/* The whole array is over the limit: look for an element that is. */
		for (int i = 0; i < src->n; i++)
		{
			Jsonb	   *e = JsonbValueToJsonb(getIthJsonbValueFromContainer(&src->items->root, i));

			if ((int64) VARSIZE(e) > limit)
			{
				msg = psprintf("item %d of node \"%s\" is too large", i, bf_or_empty(node_id));
				detail = psprintf("The item from inputSource %s takes %d bytes; the limit batchflow.max_item_size is %s.",
								  src->name, (int) VARSIZE(e),
								  text_to_cstring(DatumGetTextPP(DirectFunctionCall1(pg_size_pretty,
																					 Int64GetDatum(limit)))));
				hint = "Pass large data by reference (a key or a URL) instead of inside the item, or have a superuser raise batchflow.max_item_size.";
				break;
			}
			pfree(e);
		}
	}
	if (msg == NULL)
		return true;
	if (from == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s", msg),
				 errdetail("%s", detail),
				 errhint("%s", hint)));
	bf_run_end(run_id, k, "failed", psprintf("%s: %s %s", msg, detail, hint));
	return false;
}

/*
 * Query and keyRanges sources and large arrays (without dependsOn, whose
 * graph is checked over all items at once) go to batchflow._lazy_loop,
 * which creates the loop for the workers to fill (or fails the run, or
 * raises when raise).  The test is _lazy_loop's own first one; true if it
 * took the loop.
 */
static bool
bf_start_lazy(int64 run_id, int32 k, Jsonb *node, int n, Oid owner, bool raise)
{
	static const Oid types[6] = {INT8OID, INT4OID, JSONBOID, INT4OID, OIDOID, BOOLOID};
	Datum		args[6];
	bool		isnull;
	bool		took;

	args[0] = Int64GetDatum(run_id);
	args[1] = Int32GetDatum(k);
	args[2] = JsonbPGetDatum(node);
	args[3] = Int32GetDatum(n);
	args[4] = ObjectIdGetDatum(owner);
	args[5] = BoolGetDatum(raise);
	if (SPI_execute_plan(bf_keep_plan(&lazy_plan,
									  "SELECT batchflow._lazy_loop($1, $2, $3, $4, $5, $6)",
									  6, types),
						 args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not start the loop of node %d of run " INT64_FORMAT, k, run_id);
	took = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull));
	return !isnull && took;
}

/* The row of loop node k with n items (succeeded at once if n is 0). */
static int64
bf_insert_loop(int64 run_id, int32 k, Jsonb *node, int n)
{
	static const Oid types[5] = {INT8OID, INT4OID, JSONBOID, INT4OID, TIMESTAMPTZOID};
	Datum		args[5];
	bool		isnull;

	/* The time it is reached: not now(), an earlier node ended in this transaction. */
	args[0] = Int64GetDatum(run_id);
	args[1] = Int32GetDatum(k);
	args[2] = JsonbPGetDatum(node);
	args[3] = Int32GetDatum(n);
	args[4] = TimestampTzGetDatum(GetCurrentTimestamp());
	if (SPI_execute_plan(bf_keep_plan(&loop_plan,
									  "INSERT INTO batchflow.loop (run_id, node_index, node_id, kind, node, sequential,"
									  "                            concurrency, error_strategy, max_retries,"
									  "                            retry_delay_ms, total, status, started_at, finished_at)"
									  " SELECT $1, $2, $3 ->> 'id', 'loop', $3, $3 ->> 'loopType' = 'sequential',"
									  "        coalesce(($3 ->> 'concurrency')::int, 1),"
									  "        s.strategy,"
									  "        coalesce(($3 ->> 'maxRetries')::int,"
									  "                 CASE WHEN s.strategy = 'retry' THEN 3 ELSE 0 END),"
									  "        coalesce(($3 ->> 'retryDelayMs')::int, 1000),"
									  "        $4,"
									  "        CASE WHEN $4 = 0 THEN 'succeeded' ELSE 'running' END,"
									  "        $5,"
									  "        CASE WHEN $4 = 0 THEN $5 END"
									  "   FROM (SELECT coalesce($3 ->> 'errorStrategy', 'fail-fast') AS strategy) s"
									  " RETURNING id",
									  5, types),
						 args, NULL, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not create the loop of node %d of run " INT64_FORMAT, k, run_id);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/*
 * The items of loop loop_ref, one per element of items, in one INSERT.
 * A dependsOn loop's graph is checked and counted first
 * (batchflow._deps_start): false if it was refused (the run failed).
 */
static bool
bf_insert_items(int64 run_id, int32 from, int64 loop_ref, Jsonb *node, Jsonb *items)
{
	static const Oid deps_types[5] = {INT8OID, INT8OID, JSONBOID, JSONBOID, INT4OID};
	static const Oid types[4] = {INT8OID, INT8OID, JSONBOID, INT4ARRAYOID};
	Datum		args[5];
	char		nulls[4] = {' ', ' ', ' ', 'n'};
	Datum		unmet = (Datum) 0;

	if (bf_json_has(node, "dependsOn"))
	{
		bool		isnull;

		args[0] = Int64GetDatum(run_id);
		args[1] = Int64GetDatum(loop_ref);
		args[2] = JsonbPGetDatum(node);
		args[3] = JsonbPGetDatum(items);
		args[4] = Int32GetDatum(from);
		if (SPI_execute_plan(bf_keep_plan(&deps_plan,
										  "SELECT batchflow._deps_start($1, $2, $3, $4, $5)",
										  5, deps_types),
							 args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check the dependencies of node of run " INT64_FORMAT, run_id);
		unmet = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			return false;
		nulls[3] = ' ';
	}

	args[0] = Int64GetDatum(loop_ref);
	args[1] = Int64GetDatum(run_id);
	args[2] = JsonbPGetDatum(items);
	args[3] = unmet;
	if (SPI_execute_plan(bf_keep_plan(&items_plan,
									  "INSERT INTO batchflow.item (loop_ref, idx, run_id, item, unmet)"
									  " SELECT $1, (e.ord - 1)::int, $2, e.value, $4[e.ord]"
									  "   FROM pg_catalog.jsonb_array_elements($3) WITH ORDINALITY AS e(value, ord)",
									  4, types),
						 args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not create the items of loop " INT64_FORMAT, loop_ref);
	return true;
}

/*
 * Move run run_id on from node "from": create the loop (and items) of the
 * first node that has work, or finish the run.  new_run: the run was
 * inserted by this transaction (it has no loop yet).  Call as the
 * extension owner with search_path pinned (bf_become_admin, a worker, or
 * batchflow._advance's SET clause).
 */
void
bf_advance(int64 run_id, int32 from, bool new_run)
{
	Datum		arg = Int64GetDatum(run_id);
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Oid			owner;
	Datum		vars;
	bool		vars_null;
	Datum		outputs;
	bool		outputs_null;
	Datum		d;
	Jsonb	   *nodes;
	int			nnodes;
	int32		threshold;
	int32		current_node;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* _lazy_threshold() is an immutable SQL function: planned as a constant. */
	if (SPI_execute_plan(bf_keep_plan(&run_plan,
									  "SELECT r.finished_at IS NOT NULL, r.owner, r.vars, r.outputs,"
									  "       v.definition -> 'nodes', batchflow._lazy_threshold(),"
									  "       r.current_node"
									  "  FROM batchflow.run r"
									  "  JOIN batchflow.workflow_version v ON v.id = r.version_id"
									  " WHERE r.id = $1"
									  "   FOR UPDATE OF r",
									  1, (Oid[]) {INT8OID}),
						 &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up run " INT64_FORMAT, run_id);
	if (SPI_processed == 0 ||
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		SPI_finish();
		return;
	}
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	owner = DatumGetObjectId(SPI_getbinval(row, desc, 2, &isnull));
	vars = SPI_getbinval(row, desc, 3, &vars_null);
	outputs = SPI_getbinval(row, desc, 4, &outputs_null);
	d = SPI_getbinval(row, desc, 5, &isnull);
	nodes = isnull ? NULL : DatumGetJsonbP(d);
	threshold = DatumGetInt32(SPI_getbinval(row, desc, 6, &isnull));
	current_node = DatumGetInt32(SPI_getbinval(row, desc, 7, &isnull));
	if (nodes == NULL || !JB_ROOT_IS_ARRAY(nodes) || JB_ROOT_IS_SCALAR(nodes))
		elog(ERROR, "the workflow of run " INT64_FORMAT " has no array of nodes", run_id);
	nnodes = JB_ROOT_COUNT(nodes);

	for (int32 k = from;; k++)
	{
		Jsonb	   *node;
		Jsonb	   *src;
		char	   *node_id;
		char	   *type;
		char	   *error;
		BfSource	source;
		int64		loop_ref;
		bool		open;

		if (k >= nnodes)
		{
			bf_run_end(run_id, k, "succeeded", NULL);
			break;
		}
		node = JsonbValueToJsonb(getIthJsonbValueFromContainer(&nodes->root, k));
		node_id = bf_json_get_text(node, "id");

		/* Reached before (bf_retry re-opened an earlier loop): skip or wait. */
		if (!new_run && bf_node_reached(run_id, k, node_id, &open))
		{
			if (open)
			{
				bf_run_at(run_id, k, current_node);
				break;
			}
			continue;
		}

		type = bf_json_get_text(node, "type");
		if (type != NULL && strcmp(type, "activity") == 0)
		{
			bf_start_activity(run_id, k, current_node, node);
			break;
		}

		/* A loop: resolve its input source now that it is reached. */
		src = bf_json_get(node, "inputSource");
		error = bf_resolve_source(node, src, vars, vars_null, outputs, outputs_null, &source);
		if (error != NULL)
		{
			bf_run_end(run_id, k, "failed", error);
			break;
		}
		if (!bf_check_limits(run_id, k, from, new_run, node_id, &source))
			break;

		/* Query, keyRanges and large arrays: the workers materialise the items. */
		if ((bf_json_has(src, "query") || bf_json_has(src, "keyRanges") ||
			 (source.n >= threshold && !bf_json_has(node, "dependsOn"))) &&
			bf_start_lazy(run_id, k, node, source.n, owner, from == 0))
			break;

		loop_ref = bf_insert_loop(run_id, k, node, source.n);
		if (source.n == 0)
			continue;
		if (bf_insert_items(run_id, from, loop_ref, node, source.items))
		{
			bf_run_at(run_id, k, current_node);
			bf_wake_lead_on_commit();
		}
		break;
	}
	SPI_finish();
}

/*
 * batchflow._advance(run bigint, from int) returns void
 *
 * SQL access to bf_advance, for batchflow._start_child (child runs).
 */
Datum
bf_sql_advance(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1))
		bf_advance(PG_GETARG_INT64(0), PG_GETARG_INT32(1), false);
	PG_RETURN_VOID();
}
