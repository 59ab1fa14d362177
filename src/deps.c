/*-------------------------------------------------------------------------
 *
 * deps.c
 *	  Dependencies between the items of a loop: the loop property
 *	  "dependsOn": {"key": "name", "after": "deps"}.
 *
 *	  Each item is an object; item->>'name' is its key and item->'deps' the
 *	  keys of the items of the same loop that must succeed before it may
 *	  start.  Three moments:
 *
 *	  registration  bf_check_depends_on: the property's shape; a
 *	                dependsOn loop must be parallel.
 *	  loop start    batchflow._deps_link (bf_deps_link), from the loop's
 *	                input array before its items are inserted: keys unique,
 *	                dependencies known, no cycle (Kahn's algorithm over the
 *	                whole graph, in memory, once); then one item_dep row per
 *	                edge, an item_ready row for each item without
 *	                dependencies, an item_wait row (its count) for each item
 *	                with more than one; each item is inserted with
 *	                item.unmet = the number of its dependencies.
 *	  item end      (deps_ready.c) bf_deps_item_succeeded, in the
 *	                completing item's own transaction: its ready row goes; the wait rows of its
 *	                dependents count down, and each dependent whose last
 *	                dependency it was (the only one, or its count reached
 *	                0) gets a ready row, so it becomes claimable exactly
 *	                when that commit becomes visible.  bf_deps_item_failed:
 *	                every pending transitive dependent ends skipped with an
 *	                error that names the failed dependency.
 *
 *	  Readiness therefore costs the claim nothing: ready items are the rows
 *	  of item_ready, read in index order from the worker's hint, each then
 *	  locked in item by its key (deps_claim.c, which also keeps the plans
 *	  of these statements on their indexes whatever the statistics).  Nothing of this writes the item rows: an
 *	  UPDATE of an item (wide, and in four indexes, so never HOT) cost twice
 *	  what the insert of a narrow ready row does.  Wait rows are locked in
 *	  index order, so two items finishing at once that share dependents
 *	  cannot deadlock.  Blocked items are ordinary pending items to
 *	  everything else (closing a loop, cancelling, fail-fast), and
 *	  exactly-once holds as for any item: readiness changes only in item
 *	  transactions.
 *
 *	  This file has the first two moments; the bookkeeping when items end
 *	  is deps_ready.c.
 *
 * IDENTIFICATION
 *	  src/deps.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

#include "batchflow.h"
#include "deps.h"
#include "spi_util.h"

PG_FUNCTION_INFO_V1(bf_deps_link);

/* Longest key shown in an error. */
#define BF_DEPS_KEY_SHOWN 60

typedef struct DepKey
{
	char	   *key;
	int32		idx;
} DepKey;

static int	dep_key_cmp(const void *a, const void *b);
static int	int32_cmp(const void *a, const void *b);
static int32 dep_key_find(DepKey *keys, int n, const char *key);
static char *dep_key_shown(const char *key);
static char *dep_key_text(JsonbValue *v);
static const char *dep_value_kind(JsonbValue *v);
static char *deps_find_cycle(int n, char **key_of, const int32 *unmet,
							 const int32 *dep_start, const int32 *deps);

/* Order DepKeys by key, then by index. */
static int
dep_key_cmp(const void *a, const void *b)
{
	const DepKey *x = a;
	const DepKey *y = b;
	int			c = strcmp(x->key, y->key);

	if (c != 0)
		return c;
	return (x->idx > y->idx) - (x->idx < y->idx);
}

static int
int32_cmp(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return (x > y) - (x < y);
}

/* The index of the item with this key, or -1 (keys sorted, unique). */
static int32
dep_key_find(DepKey *keys, int n, const char *key)
{
	int			lo = 0;
	int			hi = n - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;
		int			c = strcmp(keys[mid].key, key);

		if (c == 0)
			return keys[mid].idx;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* A key for an error message, cut to a readable length. */
static char *
dep_key_shown(const char *key)
{
	int			len = strlen(key);

	if (len <= BF_DEPS_KEY_SHOWN)
		return (char *) key;
	len = pg_mbcliplen(key, len, BF_DEPS_KEY_SHOWN);
	return psprintf("%.*s...", len, key);
}

/*
 * bf_check_depends_on
 *	  Validate a loop's "dependsOn" property at registration, if present.
 */
void
bf_check_depends_on(JsonbContainer *node, const char *what)
{
	JsonbValue	v;
	JsonbValue	part;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	const char *hint = "Write \"dependsOn\": {\"key\": \"name\", \"after\": \"deps\"}: each item is an object, item->>'name' is its key and item->'deps' the keys it waits for.";

	if (getKeyJsonValueFromContainer(node, "dependsOn", 9, &v) == NULL)
		return;
	if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"dependsOn\" must be an object", what),
				 errdetail("Found %s.", v.type == jbvBinary ? "an array" : "a scalar"),
				 errhint("%s", hint)));

	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &part, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (!((part.val.string.len == 3 && strncmp(part.val.string.val, "key", 3) == 0) ||
			  (part.val.string.len == 5 && strncmp(part.val.string.val, "after", 5) == 0)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s, dependsOn: unknown property \"%.*s\"", what,
							part.val.string.len, part.val.string.val),
					 errdetail("Unknown properties are rejected so that a misspelt one is not silently ignored."),
					 errhint("Allowed properties here are \"key\" and \"after\".")));
	}
	for (int i = 0; i < 2; i++)
	{
		const char *prop = i == 0 ? "key" : "after";

		if (getKeyJsonValueFromContainer(v.val.binary.data, prop, strlen(prop), &part) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s, dependsOn: missing property \"%s\"", what, prop),
					 errdetail("\"dependsOn\" needs both \"key\" and \"after\"."),
					 errhint("%s", hint)));
		if (part.type != jbvString || part.val.string.len == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s, dependsOn: property \"%s\" must be a non-empty string", what, prop),
					 errdetail("It names a property of the items."),
					 errhint("%s", hint)));
	}

	if (getKeyJsonValueFromContainer(node, "loopType", 8, &part) != NULL &&
		part.type == jbvString &&
		!(part.val.string.len == 8 && strncmp(part.val.string.val, "parallel", 8) == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: \"dependsOn\" requires loopType \"parallel\"", what),
				 errdetail("A sequential loop runs its items strictly in index order, which dependencies could contradict."),
				 errhint("Use \"loopType\": \"parallel\" with \"concurrency\": 1 to run the items one at a time in dependency order.")));

	if (getKeyJsonValueFromContainer(node, "inputSource", 11, &part) != NULL &&
		part.type == jbvBinary && JsonContainerIsObject(part.val.binary.data))
	{
		JsonbValue	s;

		if (getKeyJsonValueFromContainer(part.val.binary.data, "query", 5, &s) != NULL ||
			getKeyJsonValueFromContainer(part.val.binary.data, "keyRanges", 9, &s) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("%s: \"dependsOn\" cannot be used with a \"query\" or \"keyRanges\" input source", what),
					 errdetail("The dependency graph is checked and recorded when the loop starts, and these sources deliver their items in chunks after that."),
					 errhint("Collect the items first (an activity with \"output\", or a variable), then loop over that with \"inputSource\": {\"variable\": ...}.")));
	}
}

/*
 * Find one cycle among the items Kahn's algorithm could not order (those
 * with unmet > 0 left) and describe it in execution order, "a -> b -> a":
 * each key must run before the next.  Every such item has a dependency
 * that is also left, so following dependencies must come back to an item
 * already on the path.
 */
static char *
deps_find_cycle(int n, char **key_of, const int32 *unmet,
				const int32 *dep_start, const int32 *deps)
{
	int32	   *pos = palloc(sizeof(int32) * n);
	int32	   *path = palloc(sizeof(int32) * (n + 1));
	int			len = 0;
	int32		v = -1;
	StringInfoData buf;

	for (int i = 0; i < n; i++)
	{
		pos[i] = -1;
		if (v < 0 && unmet[i] > 0)
			v = i;
	}
	Assert(v >= 0);
	while (pos[v] < 0)
	{
		int32		next = -1;

		pos[v] = len;
		path[len++] = v;
		for (int32 e = dep_start[v]; e < dep_start[v + 1]; e++)
			if (unmet[deps[e]] > 0)
			{
				next = deps[e];
				break;
			}
		if (next < 0)
			elog(ERROR, "dependency cycle search lost its way at item %d", v);
		v = next;
	}
	/* path[pos[v]] .. path[len-1] is the cycle, each waiting for the next. */
	initStringInfo(&buf);
	for (int i = len - 1; i >= pos[v]; i--)
		appendStringInfo(&buf, "%s -> ", dep_key_shown(key_of[path[i]]));
	appendStringInfoString(&buf, dep_key_shown(key_of[path[len - 1]]));
	return buf.data;
}

/* The text of a key, as item->>'key' gives it, or NULL if it is not a scalar. */
static char *
dep_key_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

/* "a JSON string", "null", ...: what an item that is not an object is. */
static const char *
dep_value_kind(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a JSON string";
		case jbvNumeric:
			return "a JSON number";
		case jbvBool:
			return "a JSON boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "a JSON array" : "a JSON object";
		default:
			return "a JSON value";
	}
}

/*
 * batchflow._deps_link(loop bigint, run bigint, node jsonb, items jsonb,
 *                      OUT problem text, OUT unmet int[])
 *
 * Checks the graph of a dependsOn loop from its input array, before its
 * items are inserted, and if it is sound records its edges in item_dep
 * and returns each item's number of distinct dependencies (unmet[i + 1]
 * for item i).  Otherwise returns the first problem found, and writes
 * nothing: an item that is not an object or has no key, a duplicate key,
 * dependencies that are not an array of keys, an unknown key, a cycle.
 */
Datum
bf_deps_link(PG_FUNCTION_ARGS)
{
	int64		loop_ref = PG_GETARG_INT64(0);
	int64		run_id = PG_GETARG_INT64(1);
	Jsonb	   *node = PG_GETARG_JSONB_P(2);
	Jsonb	   *items = PG_GETARG_JSONB_P(3);
	TupleDesc	rdesc;
	Datum		rvalues[2];
	bool		rnulls[2] = {true, true};
	JsonbValue	v;
	JsonbValue	idv;
	char	   *key_name;
	char	   *after_name;
	char	   *node_id = "?";
	int			n;
	char	  **key_of;
	DepKey	   *keys;
	int32	   *unmet;
	int32	   *dep_start;		/* CSR by dependent: deps[dep_start[i] ..] */
	int32	   *deps;
	JsonbContainer **item_of;
	int			nedges = 0;
	int			cap_edges;
	char	   *problem = NULL;
	JsonbIterator *it;
	JsonbIteratorToken tok;

	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "batchflow._deps_link must return a composite");
	rdesc = BlessTupleDesc(rdesc);

	if (getKeyJsonValueFromContainer(&node->root, "dependsOn", 9, &v) == NULL ||
		v.type != jbvBinary)
		elog(ERROR, "loop " INT64_FORMAT " has no dependsOn", loop_ref);
	if (getKeyJsonValueFromContainer(v.val.binary.data, "key", 3, &idv) == NULL ||
		idv.type != jbvString)
		elog(ERROR, "dependsOn without a key");
	key_name = pnstrdup(idv.val.string.val, idv.val.string.len);
	if (getKeyJsonValueFromContainer(v.val.binary.data, "after", 5, &idv) == NULL ||
		idv.type != jbvString)
		elog(ERROR, "dependsOn without after");
	after_name = pnstrdup(idv.val.string.val, idv.val.string.len);
	if (getKeyJsonValueFromContainer(&node->root, "id", 2, &idv) != NULL &&
		idv.type == jbvString)
		node_id = pnstrdup(idv.val.string.val, idv.val.string.len);
	if (!JB_ROOT_IS_ARRAY(items) || JB_ROOT_IS_SCALAR(items))
		elog(ERROR, "the items of loop " INT64_FORMAT " are not an array", loop_ref);

	n = JB_ROOT_COUNT(items);
	key_of = palloc0(sizeof(char *) * Max(n, 1));
	keys = palloc(sizeof(DepKey) * Max(n, 1));
	item_of = palloc0(sizeof(JsonbContainer *) * Max(n, 1));
	unmet = palloc0(sizeof(int32) * Max(n, 1));
	dep_start = palloc0(sizeof(int32) * (n + 1));
	cap_edges = Max(n, 16);
	deps = palloc(sizeof(int32) * cap_edges);

	/* Keys first: every item an object with a scalar key. */
	{
		int			i = 0;

		it = JsonbIteratorInit(&items->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			JsonbValue	kv;

			if (tok != WJB_ELEM)
				continue;
			if (problem == NULL)
			{
				if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
					problem = psprintf("node \"%s\": item %d is %s, but with \"dependsOn\" every item must be an object",
									   node_id, i, dep_value_kind(&v));
				else if (getKeyJsonValueFromContainer(v.val.binary.data, key_name,
													  strlen(key_name), &kv) == NULL ||
						 kv.type == jbvNull)
					problem = psprintf("node \"%s\": item %d has no key \"%s\"", node_id, i, key_name);
				else if ((key_of[i] = dep_key_text(&kv)) == NULL)
					problem = psprintf("node \"%s\": item %d: key \"%s\" must be a string or a number",
									   node_id, i, key_name);
				else
				{
					item_of[i] = v.val.binary.data;
					keys[i].key = key_of[i];
					keys[i].idx = i;
				}
			}
			i++;
		}
	}
	if (problem == NULL)
	{
		qsort(keys, n, sizeof(DepKey), dep_key_cmp);
		for (int i = 1; i < n && problem == NULL; i++)
			if (strcmp(keys[i - 1].key, keys[i].key) == 0)
				problem = psprintf("node \"%s\": duplicate key \"%s\" (items %d and %d)",
								   node_id, dep_key_shown(keys[i].key), keys[i - 1].idx, keys[i].idx);
	}

	/* Then the dependencies of each item, as indexes, without repeats. */
	for (int i = 0; i < n && problem == NULL; i++)
	{
		JsonbValue	dv;
		JsonbValue	e;
		int			first = nedges;

		dep_start[i] = nedges;
		if (getKeyJsonValueFromContainer(item_of[i], after_name, strlen(after_name), &dv) == NULL ||
			dv.type == jbvNull)
			continue;
		if (dv.type != jbvBinary || !JsonContainerIsArray(dv.val.binary.data))
		{
			problem = psprintf("node \"%s\": item %d (\"%s\"): \"%s\" must be an array of keys",
							   node_id, i, dep_key_shown(key_of[i]), after_name);
			break;
		}
		it = JsonbIteratorInit(dv.val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		{
			char	   *dk;
			int32		j;

			if (tok != WJB_ELEM)
				continue;
			if (e.type == jbvBinary || e.type == jbvNull || (dk = dep_key_text(&e)) == NULL)
			{
				problem = psprintf("node \"%s\": item %d (\"%s\"): \"%s\" must be an array of keys",
								   node_id, i, dep_key_shown(key_of[i]), after_name);
				break;
			}
			j = dep_key_find(keys, n, dk);
			if (j < 0)
			{
				problem = psprintf("node \"%s\": item %d (\"%s\") depends on unknown key \"%s\"",
								   node_id, i, dep_key_shown(key_of[i]), dep_key_shown(dk));
				break;
			}
			if (nedges == cap_edges)
			{
				cap_edges *= 2;
				deps = repalloc(deps, sizeof(int32) * cap_edges);
			}
			deps[nedges++] = j;
		}
		if (problem)
			break;
		/* Sort this item's dependencies and drop repeats. */
		if (nedges - first > 1)
		{
			int			w = first + 1;

			qsort(deps + first, nedges - first, sizeof(int32), int32_cmp);
			for (int r = first + 1; r < nedges; r++)
				if (deps[r] != deps[w - 1])
					deps[w++] = deps[r];
			nedges = w;
		}
		unmet[i] = nedges - first;
	}
	dep_start[n] = nedges;

	/*
	 * Cycles: Kahn's algorithm on a copy of the counts.  Items whose count
	 * never reaches zero lie on a cycle or wait for one.
	 */
	if (problem == NULL)
	{
		int32	   *left = palloc(sizeof(int32) * Max(n, 1));
		int32	   *out_start = palloc0(sizeof(int32) * (n + 1));
		int32	   *outs = palloc(sizeof(int32) * Max(nedges, 1));
		int32	   *fill = palloc(sizeof(int32) * Max(n, 1));
		int32	   *queue = palloc(sizeof(int32) * Max(n, 1));
		int			head = 0;
		int			tail = 0;

		memcpy(left, unmet, sizeof(int32) * n);
		for (int e = 0; e < nedges; e++)
			out_start[deps[e] + 1]++;
		for (int i = 0; i < n; i++)
			out_start[i + 1] += out_start[i];
		memcpy(fill, out_start, sizeof(int32) * n);
		for (int i = 0; i < n; i++)
			for (int32 e = dep_start[i]; e < dep_start[i + 1]; e++)
				outs[fill[deps[e]]++] = i;
		for (int i = 0; i < n; i++)
			if (left[i] == 0)
				queue[tail++] = i;
		while (head < tail)
		{
			int32		u = queue[head++];

			for (int32 e = out_start[u]; e < out_start[u + 1]; e++)
				if (--left[outs[e]] == 0)
					queue[tail++] = outs[e];
		}
		if (tail < n)
			problem = psprintf("node \"%s\": dependency cycle: %s", node_id,
							   deps_find_cycle(n, key_of, left, dep_start, deps));
	}

	if (problem == NULL)
	{
		Datum	   *u_n = palloc(sizeof(Datum) * Max(n, 1));
		ArrayType  *u_arr;
		Oid			rtypes[3] = {INT8OID, INT8OID, INT4ARRAYOID};
		Datum		rargs[3];

		for (int i = 0; i < n; i++)
			u_n[i] = Int32GetDatum(unmet[i]);
		u_arr = construct_array(u_n, n, INT4OID, 4, true, TYPALIGN_INT);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (nedges > 0)
		{
			Datum	   *e_dep = palloc(sizeof(Datum) * nedges);
			Datum	   *e_idx = palloc(sizeof(Datum) * nedges);
			Oid			ltypes[4] = {INT8OID, INT4ARRAYOID, INT4ARRAYOID, INT8OID};
			Datum		largs[4];

			for (int i = 0; i < n; i++)
				for (int32 e = dep_start[i]; e < dep_start[i + 1]; e++)
				{
					e_dep[e] = Int32GetDatum(deps[e]);
					e_idx[e] = Int32GetDatum(i);
				}
			largs[0] = Int64GetDatum(loop_ref);
			largs[1] = PointerGetDatum(construct_array(e_dep, nedges, INT4OID, 4, true, TYPALIGN_INT));
			largs[2] = PointerGetDatum(construct_array(e_idx, nedges, INT4OID, 4, true, TYPALIGN_INT));
			largs[3] = Int64GetDatum(run_id);
			if (SPI_execute_with_args("INSERT INTO batchflow.item_dep (loop_ref, dep_idx, idx, run_id)"
									  " SELECT $1, d, i, $4 FROM unnest($2, $3) AS e(d, i)",
									  4, ltypes, largs, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not record the dependencies of loop " INT64_FORMAT, loop_ref);
		}
		/* Ready: no dependencies.  Counted: more than one. */
		rargs[0] = Int64GetDatum(loop_ref);
		rargs[1] = Int64GetDatum(run_id);
		rargs[2] = PointerGetDatum(u_arr);
		if (SPI_execute_with_args("INSERT INTO batchflow.item_ready (loop_ref, idx, run_id)"
								  " SELECT $1, (u.i - 1)::int, $2"
								  "   FROM unnest($3) WITH ORDINALITY AS u(n, i) WHERE u.n = 0",
								  3, rtypes, rargs, NULL, false, 0) != SPI_OK_INSERT ||
			SPI_execute_with_args("INSERT INTO batchflow.item_wait (loop_ref, idx, unmet, run_id)"
								  " SELECT $1, (u.i - 1)::int, u.n, $2"
								  "   FROM unnest($3) WITH ORDINALITY AS u(n, i) WHERE u.n > 1",
								  3, rtypes, rargs, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the ready items of loop " INT64_FORMAT, loop_ref);
		SPI_finish();
		rvalues[1] = PointerGetDatum(u_arr);
		rnulls[1] = false;
	}
	else
	{
		rvalues[0] = CStringGetTextDatum(problem);
		rnulls[0] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(rdesc, rvalues, rnulls)));
}
