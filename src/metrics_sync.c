/*-------------------------------------------------------------------------
 *
 * metrics_sync.c
 *	  Counting a loop into the metric counters when it closes or is
 *	  re-opened (trigger loop_metrics_changed, batchflow._metrics_sync),
 *	  giving a new loop its batchflow.metric_loop row (trigger
 *	  loop_metrics_created), and the counts of a range of a loop's items
 *	  (batchflow._range_metrics).  Part 46_metrics.sql describes the
 *	  tables and the rules; this file only does the counting.
 *
 *	  Every loop close runs this, inside the closing transaction.  In
 *	  PL/pgSQL over SQL functions it re-planned five SQL functions on
 *	  every call (about as much CPU as a whole bf_start under pgbench);
 *	  here each statement is a kept plan and the sums are made in C.  The
 *	  counts are the same: items ended by status; the duration of an
 *	  item that succeeded or failed with a start time is its final
 *	  attempt's finished_at - started_at in whole microseconds (never
 *	  negative), and it is in the bucket of bound b when d <= b; retried
 *	  is the loop's failed attempts less the last one of each item that
 *	  failed for good; a difference is never negative.
 *
 *	  Which counter row.  Each counter is spread over several rows
 *	  (metric_counter.shard, metric_run_counter.shard), because the
 *	  closing transaction keeps the row it updated locked until it
 *	  commits, and a second close of the same workflow's loop that picks
 *	  the same row waits for that commit.  A worker uses the row of its
 *	  pool slot, which no other process of the database uses at the same
 *	  time; any other session one of batchflow._metric_shards() rows above
 *	  the largest slot number, chosen by its pid.  So workers never wait
 *	  for each other's counter rows.  (The rows used to be chosen by pid
 *	  modulo 16 for everyone: with 20 workers some always shared a row,
 *	  and under pgbench -c 16 starting 5-item runs a close waited 50-170
 *	  ms on average for that row.)
 *
 * IDENTIFICATION
 *	  src/metrics_sync.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/int.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "batchflow.h"
#include "metrics_sync.h"
#include "pool.h"
#include "security.h"
#include "spi_util.h"

PG_FUNCTION_INFO_V1(bf_sql_metrics_sync);
PG_FUNCTION_INFO_V1(bf_sql_range_metrics);
PG_FUNCTION_INFO_V1(bf_sql_metric_shard);
PG_FUNCTION_INFO_V1(bf_sql_loop_metrics_changed);
PG_FUNCTION_INFO_V1(bf_sql_run_metrics_finished);
PG_FUNCTION_INFO_V1(bf_sql_metric_buckets_plus);

/* Rows of each counter for the sessions that are not workers. */
#define BF_METRIC_SESSION_SHARDS 16
/* At most this many histogram bounds (batchflow.metric_duration_bounds()). */
#define BF_METRIC_MAX_BOUNDS 64

/* batchflow.item_metrics in C. */
typedef struct BfItemMetrics
{
	int64		succeeded;
	int64		failed;
	int64		skipped;
	int64		retried;
	int64		duration_count;
	double		duration_sum;
	int64		buckets[BF_METRIC_MAX_BOUNDS];	/* cumulative */
} BfItemMetrics;

static SPIPlanPtr nbounds_plan = NULL;
static SPIPlanPtr range_plan = NULL;
static SPIPlanPtr range_retried_plan = NULL;
static SPIPlanPtr locked_plan = NULL;
static SPIPlanPtr loop_plan = NULL;
static SPIPlanPtr save_plan = NULL;
static SPIPlanPtr restoring_plan = NULL;
static SPIPlanPtr created_plan = NULL;
static SPIPlanPtr run_restoring_plan = NULL;
static SPIPlanPtr run_counter_plan = NULL;

/* Number of histogram bounds; IMMUTABLE, so read once per process. */
static int	nbounds = -1;

static const Oid bf_int8_arg[1] = {INT8OID};

/*
 * bf_keep_plan, with search_path pinned while the statement is parsed the
 * first time.  The trigger functions have no SET clause (setting and
 * restoring search_path on every call cost more than some statements);
 * a kept plan resolves its names once, and is re-analysed, if ever, with
 * the search_path it was made with.
 */
static SPIPlanPtr
keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, const Oid *types)
{
	int			nest;

	if (*plan != NULL)
		return *plan;
	nest = NewGUCNestLevel();
	bf_pin_search_path();
	(void) bf_keep_plan(plan, sql, nargs, types);
	AtEOXact_GUC(true, nest);
	return *plan;
}

/*
 * Is the current statement possibly a restore's load of a table (COPY or
 * INSERT INTO)?  A statement that does not begin with either word (after
 * blanks and -- comments) cannot be: batchflow._restoring, which the
 * caller asks only when this says maybe, makes the exact test.  Saves
 * parsing and running that SQL function for every bf_start.
 */
static bool
maybe_restoring(void)
{
	const char *q = debug_query_string;

	if (q == NULL)
		return false;
	for (;;)
	{
		while (*q != '\0' && isspace((unsigned char) *q))
			q++;
		if (q[0] == '-' && q[1] == '-')
		{
			q = strchr(q, '\n');
			if (q == NULL)
				return false;
			continue;
		}
		break;
	}
	return pg_strncasecmp(q, "COPY", 4) == 0 || pg_strncasecmp(q, "INSERT", 6) == 0;
}

/* Is a restore loading table tbl now (inside SPI)? */
static bool
restoring(SPIPlanPtr *plan, const char *sql)
{
	bool		isnull;

	if (!maybe_restoring())
		return false;
	if (SPI_execute_plan(keep_plan(plan, sql, 0, NULL), NULL, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not check for a restore");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* The row set of the counters for this process (see the header). */
int
bf_metric_shard(void)
{
	int			slot = bf_pool_my_slot();

	if (slot >= 0)
		return slot;
	return BF_MAX_MAX_WORKERS + MyProcPid % BF_METRIC_SESSION_SHARDS;
}

/* The number of histogram bounds (inside SPI). */
static int
bf_metric_nbounds(void)
{
	bool		isnull;

	if (nbounds >= 0)
		return nbounds;
	if (SPI_execute_plan(keep_plan(&nbounds_plan,
									  "SELECT pg_catalog.cardinality(batchflow.metric_duration_bounds())",
									  0, NULL),
						 NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the histogram bounds");
	nbounds = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull || nbounds < 0 || nbounds > BF_METRIC_MAX_BOUNDS)
		elog(ERROR, "batchflow.metric_duration_bounds() has %d bounds, at most %d are supported",
			 nbounds, BF_METRIC_MAX_BOUNDS);
	return nbounds;
}

/* *m = nothing counted. */
static void
metrics_zero(BfItemMetrics *m)
{
	memset(m, 0, sizeof(*m));
}

/* *a += *b. */
static void
metrics_add(BfItemMetrics *a, const BfItemMetrics *b)
{
	a->succeeded += b->succeeded;
	a->failed += b->failed;
	a->skipped += b->skipped;
	a->retried += b->retried;
	a->duration_count += b->duration_count;
	a->duration_sum += b->duration_sum;
	for (int j = 0; j < BF_METRIC_MAX_BOUNDS; j++)
		a->buckets[j] += b->buckets[j];
}

/* *d = a - b, each count at least 0. */
static void
metrics_minus(BfItemMetrics *d, const BfItemMetrics *a, const BfItemMetrics *b)
{
	d->succeeded = Max(a->succeeded - b->succeeded, 0);
	d->failed = Max(a->failed - b->failed, 0);
	d->skipped = Max(a->skipped - b->skipped, 0);
	d->retried = Max(a->retried - b->retried, 0);
	d->duration_count = Max(a->duration_count - b->duration_count, 0);
	d->duration_sum = Max(a->duration_sum - b->duration_sum, 0.0);
	for (int j = 0; j < BF_METRIC_MAX_BOUNDS; j++)
		d->buckets[j] = Max(a->buckets[j] - b->buckets[j], 0);
}

/* The buckets as a bigint[] of nb elements. */
static Datum
buckets_datum(const BfItemMetrics *m, int nb)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(nb, 1));

	for (int j = 0; j < nb; j++)
		elems[j] = Int64GetDatum(m->buckets[j]);
	return PointerGetDatum(construct_array(elems, nb, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Read an item_metrics spread over the 7 columns from first (1-based) of
 * an SPI result row; null (no metric_loop row) reads as zero.
 */
static void
metrics_from_row(HeapTuple row, TupleDesc desc, int first, BfItemMetrics *m)
{
	bool		isnull;
	Datum		arr;

	metrics_zero(m);
	m->succeeded = DatumGetInt64(SPI_getbinval(row, desc, first, &isnull));
	if (isnull)
		return;
	m->failed = DatumGetInt64(SPI_getbinval(row, desc, first + 1, &isnull));
	m->skipped = DatumGetInt64(SPI_getbinval(row, desc, first + 2, &isnull));
	m->retried = DatumGetInt64(SPI_getbinval(row, desc, first + 3, &isnull));
	m->duration_count = DatumGetInt64(SPI_getbinval(row, desc, first + 4, &isnull));
	m->duration_sum = DatumGetFloat8(SPI_getbinval(row, desc, first + 5, &isnull));
	arr = SPI_getbinval(row, desc, first + 6, &isnull);
	if (!isnull)
	{
		ArrayType  *a = DatumGetArrayTypeP(arr);
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &n);
		for (int j = 0; j < n && j < BF_METRIC_MAX_BOUNDS; j++)
			m->buckets[j] = nulls[j] ? 0 : DatumGetInt64(elems[j]);
	}
}

/* The ended items of a loop in an index range, by status and k. */
#define BF_RANGE_SQL \
	"SELECT s.status, pg_catalog.width_bucket(s.us - 1, b.us_bounds), count(*), sum(s.us)::bigint" \
	"  FROM (SELECT i.status," \
	"               CASE WHEN i.status IN ('succeeded', 'failed') AND i.started_at IS NOT NULL" \
	"                    THEN greatest(round(extract(epoch FROM i.finished_at - i.started_at) * 1000000), 0)::bigint" \
	"               END AS us" \
	"          FROM batchflow.item i" \
	"         WHERE i.loop_ref = $1 AND i.idx >= $2 AND i.idx < $3" \
	"           AND i.finished_at IS NOT NULL) s," \
	"       (SELECT array_agg((x * 1000000)::bigint ORDER BY x) AS us_bounds" \
	"          FROM unnest(batchflow.metric_duration_bounds()) x) b" \
	" GROUP BY 1, 2"

/*
 * The loop's failed attempts that were followed by another: all its failed
 * attempts less the last one of each item that failed for good.
 */
#define BF_RETRIED_SQL \
	"SELECT (SELECT count(*) FROM batchflow.item_error e WHERE e.loop_ref = $1)" \
	"     - (SELECT count(DISTINCT e.idx)" \
	"          FROM batchflow.item_error e" \
	"          JOIN batchflow.item i ON i.loop_ref = e.loop_ref AND i.idx = e.idx" \
	"         WHERE e.loop_ref = $1 AND i.status = 'failed')"

/*
 * The counts and duration histogram of the ended items of loop loop_ref
 * with from <= idx < to (inside SPI).  One pass over the primary key,
 * grouped by status and by k, the number of bounds below the duration (an
 * item of d us is in every bucket j with k < j).  With want_retried the
 * same statement also counts the loop's retried attempts (one more row,
 * its status null); otherwise retried is left 0.
 */
static void
bf_range_metrics(int64 loop_ref, int32 from, int32 to, bool want_retried, BfItemMetrics *m)
{
	static const Oid types[3] = {INT8OID, INT4OID, INT4OID};
	Datum		args[3];
	int			nb = bf_metric_nbounds();
	int64		us_total = 0;
	SPIPlanPtr	plan;

	args[0] = Int64GetDatum(loop_ref);
	args[1] = Int32GetDatum(from);
	args[2] = Int32GetDatum(to);
	if (want_retried)
		plan = keep_plan(&range_retried_plan,
						 BF_RANGE_SQL " UNION ALL SELECT NULL, NULL, (" BF_RETRIED_SQL "), NULL",
						 3, types);
	else
		plan = keep_plan(&range_plan, BF_RANGE_SQL, 3, types);
	if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count the items of loop " INT64_FORMAT, loop_ref);

	metrics_zero(m);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	row = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		k_null;
		char	   *status = SPI_getvalue(row, desc, 1);
		int32		k = DatumGetInt32(SPI_getbinval(row, desc, 2, &k_null));
		int64		n = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
		int64		us = DatumGetInt64(SPI_getbinval(row, desc, 4, &isnull));

		if (status == NULL)
		{
			m->retried = n;		/* the retried row */
			continue;
		}
		if (!isnull)
			us_total += us;
		if (strcmp(status, "succeeded") == 0)
			m->succeeded += n;
		else if (strcmp(status, "failed") == 0)
			m->failed += n;
		else if (strcmp(status, "skipped") == 0)
			m->skipped += n;
		if (k_null)
			continue;
		m->duration_count += n;
		for (int j = Max(k, 0); j < nb; j++)
			m->buckets[j] += n;		/* bucket j + 1 (1-based) when k < j + 1 */
	}
	m->duration_sum = (double) us_total / 1000000.0;
	SPI_freetuptable(SPI_tuptable);
}

/*
 * A loop closed, or bf_retry re-opened it: count its items (the prefix
 * known so far plus the items above it, or all of them after a
 * re-opening, whose re-queued items count again from scratch), add to
 * batchflow.metric_counter what that adds to what was counted for it
 * before, and remember it.  Runs in the caller's transaction, as the
 * extension owner with search_path pinned.
 */
void
bf_metrics_sync(int64 loop_ref)
{
	static const Oid save_types[20] = {
		INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, FLOAT8OID, INT8ARRAYOID,
		TEXTOID, TEXTOID, INT4OID, OIDOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
	FLOAT8OID, INT8ARRAYOID};
	Datum		arg = Int64GetDatum(loop_ref);
	Datum		args[20];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	int64		run_id;
	char	   *node_id;
	bool		finished;
	char	   *workflow;
	Oid			owner;
	bool		have_row;
	int32		prefix_upto = 0;
	BfItemMetrics counted;
	BfItemMetrics prefix;
	BfItemMetrics now;
	BfItemMetrics add;
	int			nb;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nb = bf_metric_nbounds();

	/* The loop, its workflow and its metric_loop row, locked. */
	if (SPI_execute_plan(keep_plan(&locked_plan,
								   "SELECT l.run_id, l.node_id, l.finished_at IS NOT NULL, v.workflow, w.owner,"
								   "       (m.counted).succeeded, (m.counted).failed, (m.counted).skipped,"
								   "       (m.counted).retried, (m.counted).duration_count,"
								   "       (m.counted).duration_sum, (m.counted).duration_buckets,"
								   "       (m.prefix).succeeded, (m.prefix).failed, (m.prefix).skipped,"
								   "       (m.prefix).retried, (m.prefix).duration_count,"
								   "       (m.prefix).duration_sum, (m.prefix).duration_buckets,"
								   "       m.prefix_upto"
								   "  FROM batchflow.loop l"
								   "  JOIN batchflow.run r ON r.id = l.run_id"
								   "  JOIN batchflow.workflow_version v ON v.id = r.version_id"
								   "  JOIN batchflow.workflow w ON w.name = v.workflow"
								   "  JOIN batchflow.metric_loop m ON m.loop_ref = l.id"
								   " WHERE l.id = $1"
								   "   FOR UPDATE OF m",
								   1, bf_int8_arg),
						 &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the metrics of loop " INT64_FORMAT, loop_ref);
	have_row = SPI_processed > 0;
	if (!have_row)
	{
		/* No metric_loop row (a restore that did not carry it): from 0. */
		if (SPI_execute_plan(keep_plan(&loop_plan,
									   "SELECT l.run_id, l.node_id, l.finished_at IS NOT NULL, v.workflow, w.owner"
									   "  FROM batchflow.loop l"
									   "  JOIN batchflow.run r ON r.id = l.run_id"
									   "  JOIN batchflow.workflow_version v ON v.id = r.version_id"
									   "  JOIN batchflow.workflow w ON w.name = v.workflow"
									   " WHERE l.id = $1",
									   1, bf_int8_arg),
							 &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up loop " INT64_FORMAT, loop_ref);
		if (SPI_processed == 0)
		{
			SPI_finish();
			return;
		}
	}
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	run_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	node_id = SPI_getvalue(row, desc, 2);
	finished = DatumGetBool(SPI_getbinval(row, desc, 3, &isnull));
	workflow = SPI_getvalue(row, desc, 4);
	owner = DatumGetObjectId(SPI_getbinval(row, desc, 5, &isnull));
	metrics_zero(&counted);
	metrics_zero(&prefix);
	if (have_row)
	{
		metrics_from_row(row, desc, 6, &counted);
		metrics_from_row(row, desc, 13, &prefix);
		prefix_upto = DatumGetInt32(SPI_getbinval(row, desc, 20, &isnull));
	}

	if (finished && have_row)
	{
		BfItemMetrics above;

		bf_range_metrics(loop_ref, prefix_upto, PG_INT32_MAX, true, &above);
		now = prefix;
		metrics_add(&now, &above);
		now.retried = above.retried;
	}
	else
		bf_range_metrics(loop_ref, 0, PG_INT32_MAX, true, &now);
	metrics_minus(&add, &now, &counted);

	/*
	 * Remember what is counted (the prefix starts again from 0), and add
	 * what is new to this session's counter row: one statement.
	 */
	args[0] = arg;
	args[1] = Int64GetDatum(run_id);
	args[2] = Int64GetDatum(now.succeeded);
	args[3] = Int64GetDatum(now.failed);
	args[4] = Int64GetDatum(now.skipped);
	args[5] = Int64GetDatum(now.retried);
	args[6] = Int64GetDatum(now.duration_count);
	args[7] = Float8GetDatum(now.duration_sum);
	args[8] = buckets_datum(&now, nb);
	args[9] = CStringGetTextDatum(workflow);
	args[10] = CStringGetTextDatum(node_id);
	args[11] = Int32GetDatum(bf_metric_shard());
	args[12] = ObjectIdGetDatum(owner);
	args[13] = Int64GetDatum(add.succeeded);
	args[14] = Int64GetDatum(add.failed);
	args[15] = Int64GetDatum(add.skipped);
	args[16] = Int64GetDatum(add.retried);
	args[17] = Int64GetDatum(add.duration_count);
	args[18] = Float8GetDatum(add.duration_sum);
	args[19] = buckets_datum(&add, nb);
	if (SPI_execute_plan(keep_plan(&save_plan,
								   "WITH saved AS ("
								   "  INSERT INTO batchflow.metric_loop (loop_ref, run_id, counted, prefix_upto, prefix)"
								   "  VALUES ($1, $2, ROW($3, $4, $5, $6, $7, $8, $9)::batchflow.item_metrics, 0,"
								   "          batchflow._metrics_zero())"
								   "  ON CONFLICT (loop_ref) DO UPDATE"
								   "     SET counted = excluded.counted, prefix_upto = 0, prefix = excluded.prefix"
								   "  RETURNING 1)"
								   " INSERT INTO batchflow.metric_counter AS c"
								   "       (workflow, loop_id, shard, owner, succeeded, failed, skipped, retried,"
								   "        duration_count, duration_sum, duration_buckets, updated_at)"
								   " VALUES ($10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,"
								   "         pg_catalog.clock_timestamp())"
								   " ON CONFLICT (workflow, loop_id, shard) DO UPDATE"
								   "   SET succeeded = c.succeeded + excluded.succeeded,"
								   "       failed = c.failed + excluded.failed,"
								   "       skipped = c.skipped + excluded.skipped,"
								   "       retried = c.retried + excluded.retried,"
								   "       duration_count = c.duration_count + excluded.duration_count,"
								   "       duration_sum = c.duration_sum + excluded.duration_sum,"
								   "       duration_buckets = batchflow._metric_buckets_plus(c.duration_buckets,"
								   "                                                         excluded.duration_buckets),"
								   "       updated_at = excluded.updated_at",
								   20, save_types),
						 args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not add loop " INT64_FORMAT " to the metric counters", loop_ref);
	SPI_finish();
}

/*
 * batchflow._metrics_sync(loop bigint) returns void: bf_metrics_sync.
 */
Datum
bf_sql_metrics_sync(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		bf_metrics_sync(PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}

/*
 * batchflow._range_metrics(loop bigint, from int, to int)
 *	  returns batchflow.item_metrics
 *
 * The counts of the ended items of a loop with from <= idx < to, for
 * batchflow._metrics_advance (retried 0).
 */
Datum
bf_sql_range_metrics(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[7];
	bool		nulls[7] = {false};
	BfItemMetrics m;
	int			nb;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "batchflow._range_metrics must return batchflow.item_metrics");
	desc = BlessTupleDesc(desc);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nb = bf_metric_nbounds();
	bf_range_metrics(PG_GETARG_INT64(0), PG_GETARG_INT32(1), PG_GETARG_INT32(2), false, &m);
	SPI_finish();
	values[0] = Int64GetDatum(m.succeeded);
	values[1] = Int64GetDatum(m.failed);
	values[2] = Int64GetDatum(m.skipped);
	values[3] = Int64GetDatum(m.retried);
	values[4] = Int64GetDatum(m.duration_count);
	values[5] = Float8GetDatum(m.duration_sum);
	values[6] = buckets_datum(&m, nb);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * batchflow._metric_shard() returns int: which row of a counter this
 * session adds to (the header explains).
 */
Datum
bf_sql_metric_shard(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(bf_metric_shard());
}

/*
 * Triggers loop_metrics_created (AFTER INSERT, open loops) and
 * loop_metrics_changed (AFTER UPDATE of finished_at) on batchflow.loop:
 * a new loop gets its batchflow.metric_loop row (unless a restore is
 * loading loops: the dump carries those rows); a loop that closed or was
 * re-opened is counted.
 */
Datum
bf_sql_loop_metrics_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	bool		isnull;
	int64		loop_ref;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)))
		elog(ERROR, "batchflow._loop_metrics_changed must be an AFTER INSERT or UPDATE row trigger");
	desc = td->tg_relation->rd_att;
	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	loop_ref = DatumGetInt64(heap_getattr(tup, SPI_fnumber(desc, "id"), desc, &isnull));

	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		bf_metrics_sync(loop_ref);
		return PointerGetDatum(NULL);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!restoring(&restoring_plan, "SELECT batchflow._restoring('batchflow.loop')"))
	{
		Datum		args[2];
		static const Oid types[2] = {INT8OID, INT8OID};

		args[0] = Int64GetDatum(loop_ref);
		args[1] = heap_getattr(tup, SPI_fnumber(desc, "run_id"), desc, &isnull);
		if (SPI_execute_plan(keep_plan(&created_plan,
										  "INSERT INTO batchflow.metric_loop (loop_ref, run_id, counted, prefix_upto, prefix)"
										  " VALUES ($1, $2, batchflow._metrics_zero(), 0, batchflow._metrics_zero())",
										  2, types),
							 args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not create the metrics of loop " INT64_FORMAT, loop_ref);
	}
	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * Triggers run_metrics_finished (AFTER UPDATE, finished_at set) and
 * run_metrics_created_finished (AFTER INSERT of a finished run) on
 * batchflow.run: count the run into batchflow.metric_run_counter under its
 * final status.  A restore's load of finished runs is not counted again:
 * the dump carries the counters.
 */
Datum
bf_sql_run_metrics_finished(PG_FUNCTION_ARGS)
{
	static const Oid types[3] = {INT4OID, TEXTOID, INT4OID};
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	bool		isnull;
	Datum		args[3];

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)))
		elog(ERROR, "batchflow._run_metrics_finished must be an AFTER INSERT or UPDATE row trigger");
	desc = td->tg_relation->rd_att;
	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) &&
		restoring(&run_restoring_plan, "SELECT batchflow._restoring('batchflow.run')"))
	{
		SPI_finish();
		return PointerGetDatum(NULL);
	}
	args[0] = heap_getattr(tup, SPI_fnumber(desc, "version_id"), desc, &isnull);
	args[1] = heap_getattr(tup, SPI_fnumber(desc, "status"), desc, &isnull);
	args[2] = Int32GetDatum(bf_metric_shard());
	if (SPI_execute_plan(keep_plan(&run_counter_plan,
								   "INSERT INTO batchflow.metric_run_counter AS c"
								   "       (workflow, status, shard, owner, runs, updated_at)"
								   " SELECT v.workflow, $2, $3, w.owner, 1, pg_catalog.clock_timestamp()"
								   "  FROM batchflow.workflow_version v"
								   "  JOIN batchflow.workflow w ON w.name = v.workflow"
								   " WHERE v.id = $1"
								   " ON CONFLICT (workflow, status, shard) DO UPDATE"
								   "   SET runs = c.runs + 1, updated_at = excluded.updated_at",
								   3, types),
						 args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not count a finished run");
	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * batchflow._metric_buckets_plus(a bigint[], b bigint[]) returns bigint[]
 *
 * a + b element by element (two histograms' cumulative counts), for the
 * counter upsert: a subquery over unnest ... WITH ORDINALITY there cost
 * more than the rest of the update.  Arrays of different lengths, or with
 * nulls, are an error (the tables' CHECK keeps them whole).
 */
Datum
bf_sql_metric_buckets_plus(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *b = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *ae;
	Datum	   *be;
	bool	   *an;
	bool	   *bn;
	int			na;
	int			nb;
	Datum	   *sum;

	deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ae, &an, &na);
	deconstruct_array(b, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &be, &bn, &nb);
	if (na != nb)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("histogram bucket arrays of different lengths (%d and %d)", na, nb)));
	sum = palloc(sizeof(Datum) * Max(na, 1));
	for (int j = 0; j < na; j++)
	{
		int64		r;

		if (an[j] || bn[j])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("histogram bucket arrays must not contain nulls")));
		if (pg_add_s64_overflow(DatumGetInt64(ae[j]), DatumGetInt64(be[j]), &r))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("bigint out of range")));
		sum[j] = Int64GetDatum(r);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(sum, na, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}
