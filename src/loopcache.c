/*-------------------------------------------------------------------------
 *
 * loopcache.c
 *	  A worker's cache of what it needs to execute a loop's items: the
 *	  loop's settings, the run's owner and variables, and the children with
 *	  their prepared statements.
 *
 *	  A loop's definition and its run's variables cannot change while the
 *	  loop is open (nodes run in order, and definitions are immutable), so
 *	  an entry is loaded once per worker and loop, and dropped when the loop
 *	  closes or the cache grows past a bound.  Entries live in their own
 *	  memory context so that dropping one frees everything it holds.
 *
 * IDENTIFICATION
 *	  src/loopcache.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "batchflow.h"
#include "bigbatch.h"
#include "loopcache.h"
#include "spi_util.h"

#define BF_LOOP_CACHE_MAX 256

typedef struct BfLoopCacheEntry
{
	int64		loop_ref;		/* hash key */
	MemoryContext cxt;
	BfLoopInfo *info;
} BfLoopCacheEntry;

static HTAB *loop_cache = NULL;
static MemoryContext loop_cache_cxt = NULL;
/* OID of schema batchflow when the entries were loaded. */
static Oid	loop_cache_nsp = InvalidOid;

/* The statements that read a loop, prepared once per process. */
static SPIPlanPtr info_plan = NULL;
static SPIPlanPtr children_plan = NULL;
static SPIPlanPtr vars_plan = NULL;

static int	bf_loop_query(SPIPlanPtr *plan, const char *sql, Datum arg, long count);
static void bf_loop_cache_init(void);
static BfLoopInfo *bf_loop_info_load(int64 loop_ref, MemoryContext cxt);
static void bf_loop_cache_drop(BfLoopCacheEntry *entry);
static void bf_loop_cache_empty(void);

/* Run a read-only statement taking the loop id, preparing it on first use. */
static int
bf_loop_query(SPIPlanPtr *plan, const char *sql, Datum arg, long count)
{
	static const Oid argtype = INT8OID;

	bf_keep_plan(plan, sql, 1, &argtype);
	return SPI_execute_plan(*plan, &arg, NULL, true, count);
}

/* Drop every entry of the cache. */
static void
bf_loop_cache_empty(void)
{
	HASH_SEQ_STATUS status;
	BfLoopCacheEntry *e;

	hash_seq_init(&status, loop_cache);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		hash_seq_term(&status);
		bf_loop_cache_drop(e);
		hash_seq_init(&status, loop_cache);
	}
}

/* Create the hash table and its parent memory context on first use. */
static void
bf_loop_cache_init(void)
{
	HASHCTL		ctl;

	loop_cache_cxt = AllocSetContextCreate(TopMemoryContext,
										   "batchflow loop cache",
										   ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(BfLoopCacheEntry);
	ctl.hcxt = loop_cache_cxt;
	loop_cache = hash_create("batchflow loops", 64, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Free an entry's memory and saved plans, and remove it from the hash. */
static void
bf_loop_cache_drop(BfLoopCacheEntry *entry)
{
	BfLoopInfo *info = entry->info;
	int64		key = entry->loop_ref;

	if (info)
	{
		for (int i = 0; i < info->nchildren; i++)
			if (info->children[i].plan)
				SPI_freeplan(info->children[i].plan);
	}
	MemoryContextDelete(entry->cxt);
	hash_search(loop_cache, &key, HASH_REMOVE, NULL);
}

/*
 * Read a loop's settings, its run's owner and variables, and its children
 * (the node itself for a top-level activity).  Must be called inside SPI.
 * Returns NULL if the loop no longer exists.
 */
static BfLoopInfo *
bf_loop_info_load(int64 loop_ref, MemoryContext cxt)
{
	Datum		arg = Int64GetDatum(loop_ref);
	MemoryContext oldcxt;
	BfLoopInfo *info;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *strategy;
	bool		uses_context = false;

	if (bf_loop_query(&info_plan, "SELECT l.run_id, r.owner, l.kind = 'activity', l.node_id,"
							  "       l.node ->> 'output', l.total, l.sequential,"
							  "       l.concurrency, l.error_strategy, l.max_retries,"
							  "       l.retry_delay_ms, l.node ? 'dependsOn'"
							  "  FROM batchflow.loop l JOIN batchflow.run r ON r.id = l.run_id"
							  " WHERE l.id = $1", arg, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 0)
		return NULL;

	oldcxt = MemoryContextSwitchTo(cxt);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	info = palloc0(sizeof(BfLoopInfo));
	info->loop_ref = loop_ref;
	info->run_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	info->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	info->is_activity = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	info->node_id = SPI_getvalue(tup, desc, 4);
	info->output_var = info->is_activity ? SPI_getvalue(tup, desc, 5) : NULL;
	info->total = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	info->sequential = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
	info->concurrency = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	strategy = SPI_getvalue(tup, desc, 9);
	if (strcmp(strategy, "retry") == 0)
		info->strategy = BF_RETRY;
	else if (strcmp(strategy, "continue") == 0)
		info->strategy = BF_CONTINUE;
	else
		info->strategy = BF_FAIL_FAST;
	info->max_retries = DatumGetInt32(SPI_getbinval(tup, desc, 10, &isnull));
	info->retry_delay_ms = DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull));
	info->has_deps = DatumGetBool(SPI_getbinval(tup, desc, 12, &isnull));
	MemoryContextSwitchTo(oldcxt);

	if (bf_loop_query(&children_plan, "SELECT c ->> 'id', c ->> 'activity', c ->> 'sql',"
							  "       coalesce((c ->> 'timeoutMs')::int, 0), c"
							  "  FROM batchflow.loop l,"
							  "       jsonb_array_elements(CASE WHEN l.kind = 'activity'"
							  "                                 THEN jsonb_build_array(l.node)"
							  "                                 ELSE l.node -> 'children' END) c"
							  " WHERE l.id = $1", arg, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read children of loop " INT64_FORMAT, loop_ref);

	oldcxt = MemoryContextSwitchTo(cxt);
	desc = SPI_tuptable->tupdesc;
	info->nchildren = (int) SPI_processed;
	info->children = palloc0(sizeof(BfChild) * Max(info->nchildren, 1));
	for (int i = 0; i < info->nchildren; i++)
	{
		BfChild    *child = &info->children[i];

		tup = SPI_tuptable->vals[i];
		child->id = SPI_getvalue(tup, desc, 1);
		child->activity = SPI_getvalue(tup, desc, 2);
		child->sql = SPI_getvalue(tup, desc, 3);
		child->uses_context = child->sql != NULL && strstr(child->sql, "$3") != NULL;
		child->timeout_ms = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		child->node = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull));
		child->plan = NULL;
		if (child->activity != NULL && strcmp(child->activity, "http") == 0)
			info->has_http = true;
		if (child->activity != NULL && strcmp(child->activity, "workflow") == 0)
			info->has_workflow = true;
		if (child->uses_context)
			uses_context = true;
	}
	MemoryContextSwitchTo(oldcxt);

	/*
	 * The run's variables are only needed for the $3 context, and they can
	 * be large (a loop's whole input array is often one of them): keep a
	 * copy only when some child refers to $3.
	 */
	if (uses_context)
	{
		if (bf_loop_query(&vars_plan, "SELECT r.vars FROM batchflow.loop l"
								  "  JOIN batchflow.run r ON r.id = l.run_id WHERE l.id = $1", arg, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not read the variables of loop " INT64_FORMAT, loop_ref);
		oldcxt = MemoryContextSwitchTo(cxt);
		info->vars = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 1, &isnull));
		MemoryContextSwitchTo(oldcxt);
	}

	/* Still materialising (source_fill.c): the total is not known yet. */
	if (bf_loop_filling(loop_ref))
		info->total = PG_INT32_MAX;
	return info;
}

/* The cached description of a loop, loading it if needed (inside SPI). */
BfLoopInfo *
bf_loop_info(int64 loop_ref)
{
	BfLoopCacheEntry *entry;
	bool		found;

	Oid			nsp = get_namespace_oid("batchflow", true);

	if (loop_cache == NULL)
		bf_loop_cache_init();

	/*
	 * Loop ids start again from 1 when the extension is dropped and created
	 * again: entries of the old schema would describe other loops, of other
	 * owners.  Start again from empty when the schema changed.
	 */
	if (nsp != loop_cache_nsp)
	{
		bf_loop_cache_empty();
		loop_cache_nsp = nsp;
	}

	entry = hash_search(loop_cache, &loop_ref, HASH_FIND, NULL);
	if (entry)
		return entry->info;

	/* Bound the cache: when full, start again from empty. */
	if (hash_get_num_entries(loop_cache) >= BF_LOOP_CACHE_MAX)
	{
		bf_loop_cache_empty();
	}

	entry = hash_search(loop_cache, &loop_ref, HASH_ENTER, &found);
	entry->cxt = AllocSetContextCreate(loop_cache_cxt, "batchflow loop",
									   ALLOCSET_SMALL_SIZES);
	entry->info = NULL;
	PG_TRY();
	{
		entry->info = bf_loop_info_load(loop_ref, entry->cxt);
	}
	PG_CATCH();
	{
		bf_loop_cache_drop(entry);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (entry->info == NULL)
	{
		bf_loop_cache_drop(entry);
		return NULL;
	}
	return entry->info;
}

/* How many loops are cached. */
int
bf_loop_cache_count(void)
{
	return loop_cache ? (int) hash_get_num_entries(loop_cache) : 0;
}

/*
 * Drop the cached loops that are not in open_ids (sorted ascending, n of
 * them): loops closed by other workers would otherwise stay cached, with
 * their plans, until the cache is full.
 */
void
bf_loop_cache_retain(const int64 *open_ids, int n)
{
	HASH_SEQ_STATUS status;
	BfLoopCacheEntry *e;
	int64		stale[BF_LOOP_CACHE_MAX];
	int			nstale = 0;

	if (bf_loop_cache_count() <= n)
		return;
	hash_seq_init(&status, loop_cache);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		int			lo = 0;
		int			hi = n - 1;
		bool		found = false;

		while (lo <= hi && !found)
		{
			int			mid = (lo + hi) / 2;

			if (open_ids[mid] == e->loop_ref)
				found = true;
			else if (open_ids[mid] < e->loop_ref)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		if (!found && nstale < BF_LOOP_CACHE_MAX)
			stale[nstale++] = e->loop_ref;
	}
	for (int i = 0; i < nstale; i++)
		bf_loop_info_forget(stale[i]);
}

/* Drop a loop from the cache (it closed, or its plans must be redone). */
void
bf_loop_info_forget(int64 loop_ref)
{
	BfLoopCacheEntry *entry;

	if (loop_cache == NULL)
		return;
	entry = hash_search(loop_cache, &loop_ref, HASH_FIND, NULL);
	if (entry)
		bf_loop_cache_drop(entry);
}
