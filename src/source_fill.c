/*-------------------------------------------------------------------------
 *
 * source_fill.c
 *	  Materialising a loop's items behind its start, from the item
 *	  workers: query sources and large JSON arrays (streamed by a drainer,
 *	  source_drain.c) and key ranges (source_keyranges.c).
 *
 *	  A loop that still materialises has a row in batchflow.loop_fill
 *	  (created by batchflow._lazy_loop when the run reaches the loop);
 *	  next_idx there is the number of items committed so far.  Each chunk
 *	  of items is inserted in a transaction of its own that also advances
 *	  next_idx, so items can be claimed as soon as their chunk commits and a
 *	  chunk is either entirely in (with next_idx past it) or not at all.
 *
 *	  Queries and arrays: one worker at a time drives a loop, holding the
 *	  loop's fill lock (an advisory tag, field4 BF_FILL_LOCK_FIELD, at
 *	  session level).  It starts a drainer, a dynamic background worker that
 *	  opens the query in one transaction (one snapshot, taken at the loop's
 *	  start) and streams its rows through a shared-memory queue; the driving
 *	  worker commits them in chunks.  A backend cannot commit while it keeps
 *	  a portal open, so the reading and the committing are two processes.
 *	  If either process dies, or the server crashes, the other side sees the
 *	  queue detached, the uncommitted chunk vanishes with its transaction,
 *	  and the next driver starts a new drainer that skips next_idx rows.
 *
 *	  Lock order: the loop row, then its loop_fill row, as bf_cancel and
 *	  _close_loop do, so a chunk and a cancel never deadlock.
 *
 * IDENTIFICATION
 *	  src/source_fill.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "batchflow.h"
#include "bigbatch.h"
#include "pool.h"
#include "wake_commit.h"
#include "spi_util.h"

#define BF_DRAIN_QUEUE_SIZE (1024 * 1024)
#define BF_FIRST_CHUNK 1000
#define BF_CHUNK 10000
#define BF_CHUNK_MS 100
#define BF_MAX_FILL_LOOPS 64
#define BF_RELIST_MS 200

/* The drain this worker drives, if any; lives across transactions. */
typedef struct BfDrain
{
	bool		active;
	int64		loop_ref;
	int32		next_idx;
	LOCKTAG		lock;
	dsm_segment *seg;
	shm_mq_handle *mqh;
	BackgroundWorkerHandle *handle;
	bool		finished;		/* the drainer sent everything */
} BfDrain;

static BfDrain drain;
static MemoryContext fill_cxt = NULL;
static TimestampTz listed_at = 0;
static int64 lazy_loops[BF_MAX_FILL_LOOPS];
static int	nlazy = 0;
static int64 range_loops[BF_MAX_FILL_LOOPS];
static int	nrange = 0;
static bool warned_no_slot = false;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr list_plan = NULL;
static SPIPlanPtr filling_plan = NULL;

static void bf_fill_list(void);
static bool bf_drain_start(int64 loop_ref);
static bool bf_drain_chunk(void);
static void bf_drain_stop(void);
static void bf_fill_fail_loop(int64 loop_ref, const char *error);

/*
 * The open loops that are materialising, looked up at most every
 * BF_RELIST_MS (a worker woken by bf_start's commit has slept longer than
 * that): which to drive (query, array) and which to top up (keyRanges).
 */
static void
bf_fill_list(void)
{
	Oid			nsp;

	nlazy = nrange = 0;
	bf_txn_begin("batchflow: listing loops to fill");
	nsp = get_namespace_oid("batchflow", true);
	if (OidIsValid(nsp) && OidIsValid(get_relname_relid("loop_fill", nsp)))
	{
		/* Prepared once: a worker woken for new work lists before it claims. */
		bf_keep_plan(&list_plan, "SELECT f.loop_ref, f.kind = 'keyRanges'"
					 "  FROM batchflow.loop_fill f JOIN batchflow.loop l ON l.id = f.loop_ref"
					 " WHERE l.finished_at IS NULL AND l.status = 'running'"
					 " ORDER BY f.loop_ref LIMIT 64", 0, NULL);
		if (SPI_execute_plan(list_plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list the loops to fill");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));

			if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
				range_loops[nrange++] = id;
			else
				lazy_loops[nlazy++] = id;
		}
	}
	bf_txn_end();
}

/*
 * One round of materialisation work for an item worker, outside any
 * transaction: a chunk of the drain it drives (or of one it starts now),
 * and key ranges for loops running short of items.  True if it did some.
 */
bool
bf_fill_step(void)
{
	bool		worked = false;
	TimestampTz now = GetCurrentTimestamp();

	if (!bf_pool_exists())
		return false;
	if (fill_cxt == NULL)
		fill_cxt = AllocSetContextCreate(TopMemoryContext, "batchflow fill",
										 ALLOCSET_DEFAULT_SIZES);

	if (listed_at == 0 || TimestampDifferenceExceeds(listed_at, now, BF_RELIST_MS))
	{
		listed_at = now;
		bf_fill_list();
	}

	if (!drain.active)
	{
		for (int i = 0; i < nlazy && !drain.active; i++)
			(void) bf_drain_start(lazy_loops[i]);
	}
	if (drain.active)
		worked = bf_drain_chunk();

	for (int i = 0; i < nrange; i++)
	{
		bool		more;

		bf_txn_begin("batchflow: computing key ranges");
		more = bf_keyranges_chunk(range_loops[i]);
		bf_txn_end();
		worked |= more;
	}
	return worked;
}

/*
 * Become the driver of a query or array loop: take its fill lock (at
 * session level, without waiting), then start a drainer for the rows not
 * materialised yet.  False if another worker drives it or it is done.
 */
static bool
bf_drain_start(int64 loop_ref)
{
	BackgroundWorker bgw;
	BfDrainHeader *hdr;
	shm_mq	   *mq;
	Datum		arg = Int64GetDatum(loop_ref);
	Oid			argtype = INT8OID;
	bool		isnull;
	MemoryContext oldcxt;

	memset(&drain, 0, sizeof(drain));
	SET_LOCKTAG_ADVISORY(drain.lock, MyDatabaseId,
						 (uint32) ((uint64) loop_ref >> 32), (uint32) loop_ref,
						 BF_FILL_LOCK_FIELD);

	bf_txn_begin("batchflow: starting to materialise items");
	if (LockAcquire(&drain.lock, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		bf_txn_end();
		return false;
	}
	if (SPI_execute_with_args("SELECT f.next_idx FROM batchflow.loop_fill f"
							  "  JOIN batchflow.loop l ON l.id = f.loop_ref"
							  " WHERE f.loop_ref = $1 AND l.status = 'running'"
							  "   AND l.finished_at IS NULL",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read loop_fill");
	if (SPI_processed == 0)
	{
		bf_txn_end();
		LockRelease(&drain.lock, ExclusiveLock, true);
		return false;
	}
	drain.next_idx = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	bf_txn_end();

	/* The queue: a segment that lives until this worker detaches it. */
	oldcxt = MemoryContextSwitchTo(fill_cxt);
	drain.seg = dsm_create(MAXALIGN(sizeof(BfDrainHeader)) + BF_DRAIN_QUEUE_SIZE, 0);
	dsm_pin_mapping(drain.seg);
	hdr = dsm_segment_address(drain.seg);
	hdr->dboid = MyDatabaseId;
	hdr->loop_ref = loop_ref;
	hdr->skip = drain.next_idx;
	mq = shm_mq_create((char *) hdr + MAXALIGN(sizeof(BfDrainHeader)), BF_DRAIN_QUEUE_SIZE);
	shm_mq_set_receiver(mq, MyProc);

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "batchflow");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "bf_drain_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "batchflow drain loop " INT64_FORMAT, loop_ref);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "batchflow drain");
	bgw.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(drain.seg));
	bgw.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&bgw, &drain.handle))
	{
		MemoryContextSwitchTo(oldcxt);
		if (!warned_no_slot)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("batchflow could not start a worker to materialise the items of loop " INT64_FORMAT,
							loop_ref),
					 errdetail("No background worker slot is free."),
					 errhint("Raise max_worker_processes: a loop fed by a query or a large array needs one more background worker while its items are materialised.")));
		warned_no_slot = true;
		dsm_detach(drain.seg);
		drain.seg = NULL;
		LockRelease(&drain.lock, ExclusiveLock, true);
		return false;
	}
	warned_no_slot = false;
	drain.mqh = shm_mq_attach(mq, drain.seg, drain.handle);
	MemoryContextSwitchTo(oldcxt);
	drain.loop_ref = loop_ref;
	drain.active = true;
	return true;
}

/* Stop driving: detach the queue (the drainer then exits), free the lock. */
static void
bf_drain_stop(void)
{
	if (!drain.active)
		return;
	if (drain.handle != NULL && !drain.finished)
		TerminateBackgroundWorker(drain.handle);
	if (drain.mqh != NULL)
		shm_mq_detach(drain.mqh);
	if (drain.seg != NULL)
		dsm_detach(drain.seg);
	if (drain.handle != NULL)
		pfree(drain.handle);
	LockRelease(&drain.lock, ExclusiveLock, true);
	memset(&drain, 0, sizeof(drain));
	MemoryContextReset(fill_cxt);
}

/*
 * Is the loop still materialising its items (inside SPI)?  False under a
 * schema without batchflow.loop_fill (0.1.0, before ALTER EXTENSION UPDATE).
 */
bool
bf_loop_filling(int64 loop_ref)
{
	Oid			nsp = get_namespace_oid("batchflow", true);
	Datum		arg = Int64GetDatum(loop_ref);
	Oid			argtype = INT8OID;

	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("loop_fill", nsp)))
		return false;
	/* Prepared once: every new loop's description asks (loopcache.c). */
	bf_keep_plan(&filling_plan, "SELECT 1 FROM batchflow.loop_fill WHERE loop_ref = $1",
				 1, &argtype);
	if (SPI_execute_plan(filling_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read loop_fill");
	return SPI_processed > 0;
}

/* After an error in a worker's step (transaction aborted): stop driving. */
void
bf_fill_abandon(void)
{
	bf_drain_stop();
}

/* Mark a loop failed with "error" (inside SPI); its close fails the run. */
static void
bf_fill_fail_loop(int64 loop_ref, const char *error)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		args[2] = {Int64GetDatum(loop_ref), CStringGetTextDatum(error)};

	if (SPI_execute_with_args("UPDATE batchflow.loop SET status = 'failed', error = $2"
							  " WHERE id = $1 AND status = 'running'",
							  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not fail loop " INT64_FORMAT, loop_ref);
	bf_wake_on_commit();
}

/*
 * One chunk, in a transaction of its own: lock the loop and its loop_fill
 * row, take the rows the drainer has sent (up to BF_CHUNK, or what arrives
 * within BF_CHUNK_MS), insert them as items, advance next_idx (or delete
 * the row after the last one), set the loop's total, commit.  True if
 * items were added.
 */
static bool
bf_drain_chunk(void)
{
	Datum		arg = Int64GetDatum(drain.loop_ref);
	Oid			argtype = INT8OID;
	bool		isnull;
	bool		stop = false;
	bool		done = false;
	char	   *error = NULL;
	double		estimate = -1;
	int			limit = drain.next_idx == 0 ? BF_FIRST_CHUNK : BF_CHUNK;
	Datum	   *rows;
	int			nrows = 0;
	int64		run_id = 0;
	char	   *node_id = NULL;
	TimestampTz start = GetCurrentTimestamp();
	int			max_item_kb = atoi(GetConfigOption("batchflow.max_item_size", false, false));
	int			max_items = atoi(GetConfigOption("batchflow.max_items_per_run", false, false));
	int64		max_bytes = (int64) max_item_kb * 1024;

	bf_txn_begin("batchflow: materialising items");

	if (SPI_execute_with_args("SELECT status = 'running' AND finished_at IS NULL, run_id, node_id"
							  "  FROM batchflow.loop WHERE id = $1 FOR UPDATE",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock loop " INT64_FORMAT, drain.loop_ref);
	if (SPI_processed == 0 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		stop = true;
	else
	{
		run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		node_id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		if (SPI_execute_with_args("SELECT next_idx FROM batchflow.loop_fill"
								  " WHERE loop_ref = $1 FOR UPDATE",
								  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not lock loop_fill of loop " INT64_FORMAT, drain.loop_ref);
		if (SPI_processed == 0 ||
			DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) != drain.next_idx)
			stop = true;
	}

	rows = palloc(sizeof(Datum) * limit);
	while (!stop && !done && error == NULL && nrows < limit)
	{
		Size		len;
		void	   *data;
		shm_mq_result res = shm_mq_receive(drain.mqh, &len, &data, true);

		if (res == SHM_MQ_WOULD_BLOCK)
		{
			if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), BF_CHUNK_MS))
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 10, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (res == SHM_MQ_DETACHED)
		{
			/* The drainer went away: commit what came, start again later. */
			stop = true;
			break;
		}
		switch (((char *) data)[0])
		{
			case BF_DRAIN_ROW:
				{
					char	   *copy = palloc(len - 1);

					memcpy(copy, (char *) data + 1, len - 1);
					if ((int64) (len - 1) > max_bytes)
						error = psprintf("item %d of node \"%s\" is too large: it takes %zu bytes; the limit batchflow.max_item_size is %s. Pass large data by reference (a key or a URL) instead of inside the item, or have a superuser raise batchflow.max_item_size.",
										 drain.next_idx + nrows, node_id, len - 1,
										 psprintf("%d kB", max_item_kb));
					rows[nrows++] = PointerGetDatum(copy);
					break;
				}
			case BF_DRAIN_ESTIMATE:
				memcpy(&estimate, (char *) data + 1, sizeof(double));
				break;
			case BF_DRAIN_ERROR:
				error = psprintf("node \"%s\": inputSource failed: %s", node_id, (char *) data + 1);
				break;
			case BF_DRAIN_DONE:
				done = true;
				drain.finished = true;
				break;
			default:
				elog(ERROR, "unexpected message from the batchflow drainer");
		}
	}

	/* batchflow.max_items_per_run, over all the run's loops */
	if (!stop && error == NULL && nrows > 0)
	{
		Oid			types[2] = {INT8OID, INT8OID};
		Datum		args[2] = {Int64GetDatum(run_id), arg};
		int64		others;

		if (SPI_execute_with_args("SELECT coalesce(sum(total), 0)::int8 FROM batchflow.loop"
								  " WHERE run_id = $1 AND id <> $2",
								  2, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not count the run's items");
		others = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (others + drain.next_idx + nrows > max_items)
			error = psprintf("too many items for one run: node \"%s\" would bring the run to " INT64_FORMAT " items: the limit batchflow.max_items_per_run is %d items per run. Split the input over several runs, or have a superuser raise batchflow.max_items_per_run.",
							 node_id, others + drain.next_idx + nrows, max_items);
	}

	if (error != NULL)
	{
		bf_fill_fail_loop(drain.loop_ref, error);
		stop = true;
	}
	else if (!stop || nrows > 0)
	{
		Oid			types[4] = {INT8OID, INT4OID, INT8OID, JSONBARRAYOID};
		Datum		args[4];
		int32		next = drain.next_idx + nrows;

		if (nrows > 0)
		{
			if (insert_plan == NULL)
			{
				insert_plan = SPI_prepare("INSERT INTO batchflow.item (loop_ref, idx, run_id, item)"
										  " SELECT $1, $2 + (u.o - 1)::int, $3, u.v"
										  "   FROM unnest($4) WITH ORDINALITY AS u(v, o)",
										  4, types);
				if (insert_plan == NULL)
					elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
				SPI_keepplan(insert_plan);
			}
			args[0] = arg;
			args[1] = Int32GetDatum(drain.next_idx);
			args[2] = Int64GetDatum(run_id);
			args[3] = PointerGetDatum(construct_array(rows, nrows, JSONBOID, -1, false, TYPALIGN_INT));
			if (SPI_execute_plan(insert_plan, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not insert the items of loop " INT64_FORMAT, drain.loop_ref);
		}

		args[0] = arg;
		args[1] = Int32GetDatum(next);
		args[2] = Float8GetDatum(estimate);
		types[2] = FLOAT8OID;
		if (SPI_execute_with_args(done
								  ? "DELETE FROM batchflow.loop_fill WHERE loop_ref = $1 AND $2 >= 0 AND $3 IS NOT NULL"
								  : "UPDATE batchflow.loop_fill SET next_idx = $2,"
								  "       estimate = CASE WHEN $3 >= 0 THEN $3 ELSE estimate END"
								  " WHERE loop_ref = $1",
								  3, types, args, NULL, false, 0) < 0 ||
			SPI_execute_with_args("UPDATE batchflow.loop SET total = $2 WHERE id = $1",
								  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the items of loop " INT64_FORMAT, drain.loop_ref);
		drain.next_idx = next;
		if (nrows > 0 || done)
			bf_wake_on_commit();
	}
	bf_txn_end();

	if (stop || done)
		bf_drain_stop();
	return nrows > 0;
}
