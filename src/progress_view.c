/*-------------------------------------------------------------------------
 *
 * progress_view.c
 *	  What the progress views read from shared memory, and the run-level
 *	  functions bf_progress, bf_report and bf_summary.
 *
 *	  batchflow._progress_live() returns, per loop known to shared memory,
 *	  the counts still pending in the workers' slots, the number of items
 *	  executing right now, the recent rate and the time of the last commit.
 *	  The views add it to what batchflow.loop_progress and
 *	  batchflow.progress_counter hold.
 *
 *	  bf_progress, bf_report and bf_summary run as their caller, refuse a
 *	  run the caller may not see, and then read the internal functions
 *	  batchflow._progress, _report and _summary as the extension owner.
 *
 * IDENTIFICATION
 *	  src/progress_view.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "batchflow.h"
#include "pool.h"
#include "progress.h"
#include "progress_shared.h"
#include "security.h"

/* How many times bf_progress re-reads when counts moved during a read. */
#define BF_READ_ATTEMPTS 20

PG_FUNCTION_INFO_V1(bf_sql_progress_live);
PG_FUNCTION_INFO_V1(bf_sql_progress_exact);
PG_FUNCTION_INFO_V1(bf_progress);
PG_FUNCTION_INFO_V1(bf_report);
PG_FUNCTION_INFO_V1(bf_summary);

/* One loop's live figures, gathered from shared memory. */
typedef struct BfLive
{
	int64		loop_ref;
	int64		pending_completed;
	int64		pending_failed;
	int32		active;
} BfLive;

static BfLive *bf_live_entry(BfLive *live, int *n, int max, int64 loop_ref);
static void bf_run_srf(FunctionCallInfo fcinfo, const char *sql);

/* The entry of loop_ref in live[], added if missing (NULL if full). */
static BfLive *
bf_live_entry(BfLive *live, int *n, int max, int64 loop_ref)
{
	for (int i = 0; i < *n; i++)
		if (live[i].loop_ref == loop_ref)
			return &live[i];
	if (*n >= max)
		return NULL;
	memset(&live[*n], 0, sizeof(BfLive));
	live[*n].loop_ref = loop_ref;
	return &live[(*n)++];
}

/*
 * batchflow._progress_live() returns (loop_ref, pending_completed,
 * pending_failed, active, items_per_sec, last_commit_at): one row per loop
 * that has pending counts, items executing, or rate samples.
 */
Datum
bf_sql_progress_live(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	BfLive	   *live;
	int			n = 0;
	int			max;
	int			skip_slot = bf_progress_written_slot();
	TimestampTz now = GetCurrentTimestamp();

	InitMaterializedSRF(fcinfo, 0);
	if (!bf_progress_exists() || !bf_pool_exists())
		PG_RETURN_VOID();

	max = BF_TRACKED_LOOPS + bf_progress_nslots() * (BF_PENDING_LOOPS * 2) +
		bf_pool_nslots();
	live = palloc(sizeof(BfLive) * max);

	/* Loops with rate samples (copied out, then merged without the lock). */
	{
		int64		tracked[BF_TRACKED_LOOPS];
		int			ntracked = bf_rate_loops(tracked);

		for (int i = 0; i < ntracked; i++)
			(void) bf_live_entry(live, &n, max, tracked[i]);
	}

	/* Counts committed but not yet written, by the workers of this database. */
	for (int s = 0; s < bf_progress_nslots(); s++)
	{
		BfCount		pending[BF_PENDING_LOOPS * 2];
		int			npending;
		BfWorkerView w;

		if (s == skip_slot)
			continue;
		if (bf_pool_read(s, &w) && w.dboid != MyDatabaseId)
			continue;
		npending = bf_pending_for_snapshot(s, pending);
		for (int i = 0; i < npending; i++)
		{
			BfLive	   *e = bf_live_entry(live, &n, max, pending[i].loop_ref);

			if (e == NULL)
				continue;
			e->pending_completed += pending[i].completed;
			e->pending_failed += pending[i].failed;
		}
	}

	/* Items executing right now. */
	for (int s = 0; s < bf_pool_nslots(); s++)
	{
		BfWorkerView w;
		int32		nactive;
		BfLive	   *e;

		if (!bf_pool_read_here(s, &w) || w.run_id == 0)
			continue;

		/*
		 * Its worker's transaction gave the item its result, committed
		 * and seen by this snapshot, but has not cleared the slot yet:
		 * counted as ended, so not as active as well.
		 */
		if (bf_pool_view_recorded(&w))
			continue;

		/*
		 * In the worker's own transaction, the items it has just recorded
		 * as ended are counted as such: not as active as well.
		 */
		nactive = Max(w.nactive, 1) - bf_progress_shown_ended(s, w.idx, w.started_at);
		if (nactive <= 0)
			continue;
		e = bf_live_entry(live, &n, max, w.loop_ref);
		if (e != NULL)
			e->active += nactive;
	}

	for (int i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		double		rate;
		TimestampTz last_commit;
		bool		has_rate;

		has_rate = bf_progress_rate(live[i].loop_ref, now, &rate, &last_commit);
		values[0] = Int64GetDatum(live[i].loop_ref);
		values[1] = Int64GetDatum(live[i].pending_completed);
		values[2] = Int64GetDatum(live[i].pending_failed);
		values[3] = Int32GetDatum(live[i].active);
		values[4] = Float8GetDatum(rate);
		nulls[4] = !has_rate;
		values[5] = TimestampTzGetDatum(last_commit);
		nulls[5] = last_commit == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

/*
 * batchflow._progress_exact() returns true while the counters cannot be
 * trusted and the views must count items in batchflow.item: before the
 * launcher has rebuilt them after a start or crash, after items finished
 * uncounted, or when batchflow.track_progress is off.
 */
Datum
bf_sql_progress_exact(PG_FUNCTION_ARGS)
{
	bool		reconcile_all;
	bool		uncounted;

	if (!bf_progress_exists() || !bf_track_progress)
		PG_RETURN_BOOL(true);
	bf_progress_flags(&reconcile_all, &uncounted);
	PG_RETURN_BOOL(reconcile_all || uncounted);
}

/*
 * Return the rows of "sql" (which takes the run id as $1) as this
 * function's result set, after checking that the caller may see the run.
 */
static void
bf_run_srf(FunctionCallInfo fcinfo, const char *sql)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		run_id = PG_GETARG_INT64(0);
	Datum		arg = Int64GetDatum(run_id);
	Oid			argtype = INT8OID;
	BfSavedUser saved;
	TupleDesc	want;
	int			natts;
	Datum	   *values;
	bool	   *nulls;

	InitMaterializedSRF(fcinfo, 0);
	want = rsinfo->setDesc;
	natts = want->natts;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_become_admin(&saved);
	(void) bf_run_checked(run_id, saved.userid, NULL, NULL);
	bf_restore_user(&saved);

	/*
	 * Counts move from the workers' shared memory to the tables when they
	 * write them; a query whose snapshot predates such a write but that
	 * reads shared memory after it would miss them.  Run it again (a few
	 * times at most) until no write happened during it.
	 */
	bf_become_admin(&saved);
	for (int attempt = 0;; attempt++)
	{
		uint64		begun1,
					done1,
					begun2,
					done2;

		bf_progress_moves_read(&begun1, &done1);
		if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read run " INT64_FORMAT, run_id);
		pg_read_barrier();
		bf_progress_moves_read(&begun2, &done2);
		if ((begun1 == done1 && begun2 == begun1 && done2 == done1) ||
			attempt >= BF_READ_ATTEMPTS - 1)
			break;
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	bf_restore_user(&saved);

	if (SPI_tuptable->tupdesc->natts != natts)
		elog(ERROR, "query returned %d columns, expected %d",
			 SPI_tuptable->tupdesc->natts, natts);
	for (int c = 0; c < natts; c++)
		if (TupleDescAttr(SPI_tuptable->tupdesc, c)->atttypid != TupleDescAttr(want, c)->atttypid)
			elog(ERROR, "column %d has type %u, expected %u", c + 1,
				 TupleDescAttr(SPI_tuptable->tupdesc, c)->atttypid,
				 TupleDescAttr(want, c)->atttypid);

	values = palloc(sizeof(Datum) * natts);
	nulls = palloc(sizeof(bool) * natts);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		heap_deform_tuple(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, want, values, nulls);
	}
	SPI_finish();
}

/*
 * bf_progress(run bigint) returns one row per loop of the run: loop_id,
 * status, total, completed, failed, active, percent, items_per_sec,
 * elapsed, eta.
 */
Datum
bf_progress(PG_FUNCTION_ARGS)
{
	bf_run_srf(fcinfo, "SELECT * FROM batchflow._progress($1)");
	PG_RETURN_VOID();
}

/*
 * bf_report(run bigint) returns one row per failed item: loop_id, idx,
 * item (truncated to 1 kB), attempts, error.
 */
Datum
bf_report(PG_FUNCTION_ARGS)
{
	bf_run_srf(fcinfo, "SELECT * FROM batchflow._report($1)");
	PG_RETURN_VOID();
}

/* bf_summary(run bigint) returns the run's counts per node. */
Datum
bf_summary(PG_FUNCTION_ARGS)
{
	bf_run_srf(fcinfo, "SELECT * FROM batchflow._summary($1)");
	PG_RETURN_VOID();
}
