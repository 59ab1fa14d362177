/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Choosing the next item to execute: a loop in round-robin order, a
 *	  free slot under that loop's cap, and the loop's next pending item.
 *
 *	  The cap is enforced with slot locks: loop L with cap c has c lock tags
 *	  (advisory-lock tags in a key space SQL's pg_advisory_* functions never
 *	  use), and a worker must hold one, in ExclusiveLock mode, for as long
 *	  as it executes an item of L.  The lock is transaction-scoped and the
 *	  item's effects, its completion and the release of the slot all happen
 *	  at the same commit, so at no instant can more than c items of L
 *	  execute: not with many workers, not across crashes (the lock manager
 *	  forgets everything on restart, and so do the items' transactions).
 *	  The slot is free again the moment the item commits, and the worker
 *	  that freed it immediately looks for the next item.
 *
 *	  Within a slot, the item is claimed with FOR UPDATE SKIP LOCKED in
 *	  index order, through the partial index item_claim_idx.  Sequential
 *	  loops have one slot and take strictly the lowest pending index, even
 *	  when it is waiting out a retry backoff.
 *
 * IDENTIFICATION
 *	  src/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "batchflow.h"

/* Slot locks use advisory tags with field4 >= this; SQL uses 1 and 2. */
#define BF_SLOT_LOCK_BASE 16

/* The id of the loop served last, for round-robin fairness between loops. */
static int64 rr_cursor = 0;

static SPIPlanPtr open_loops_plan = NULL;
static SPIPlanPtr claim_parallel_plan = NULL;
static SPIPlanPtr claim_sequential_plan = NULL;
static SPIPlanPtr remaining_plan = NULL;

static SPIPlanPtr bf_keep_plan(const char *sql, int nargs);
static bool bf_take_slot(int64 loop_ref, int cap, LOCKTAG *tag);
static void bf_slot_tag(LOCKTAG *tag, int64 loop_ref, int slot);

/* Prepare a statement taking nargs bigint parameters and keep it. */
static SPIPlanPtr
bf_keep_plan(const char *sql, int nargs)
{
	Oid			types[1] = {INT8OID};
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/* The lock tag of slot "slot" of loop "loop_ref". */
static void
bf_slot_tag(LOCKTAG *tag, int64 loop_ref, int slot)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId,
						 (uint32) ((uint64) loop_ref >> 32),
						 (uint32) loop_ref,
						 BF_SLOT_LOCK_BASE + slot);
}

/*
 * Take any free slot of the loop without waiting; false if all c are held.
 * Workers start their search at different slots to avoid colliding.
 */
static bool
bf_take_slot(int64 loop_ref, int cap, LOCKTAG *tag)
{
	int			start = MyProcPid % cap;

	for (int i = 0; i < cap; i++)
	{
		bf_slot_tag(tag, loop_ref, (start + i) % cap);
		if (LockAcquire(tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
			return true;
	}
	return false;
}

/*
 * Claim the next item to execute, in the current transaction (inside SPI).
 * On success the item's row is locked and a slot of its loop is held until
 * the transaction ends.  Otherwise *next_due is lowered to the earliest
 * retry backoff that ends in the future, and loops that look finished (or
 * that were stopped) are appended to *close_list for the caller to close
 * after this transaction (at most BF_MAX_CLOSE of them).
 */
bool
bf_claim_next(BfClaim *claim, TimestampTz *next_due,
			  int64 *close_list, int *nclose)
{
	uint64		nloops;
	SPITupleTable *loops;
	uint64		first = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (open_loops_plan == NULL)
	{
		open_loops_plan = bf_keep_plan("SELECT id, status = 'running', concurrency, sequential"
									   "  FROM batchflow.loop WHERE finished_at IS NULL"
									   " ORDER BY id", 0);
		claim_parallel_plan = bf_keep_plan("SELECT idx, item, attempts FROM batchflow.item"
										   " WHERE loop_ref = $1 AND status = 'pending'"
										   "   AND (not_before IS NULL OR not_before <= clock_timestamp())"
										   " ORDER BY idx LIMIT 1"
										   " FOR UPDATE SKIP LOCKED", 1);
		claim_sequential_plan = bf_keep_plan("SELECT idx, item, attempts, not_before"
											 "  FROM batchflow.item"
											 " WHERE loop_ref = $1 AND status = 'pending'"
											 " ORDER BY idx LIMIT 1"
											 " FOR UPDATE SKIP LOCKED", 1);
		remaining_plan = bf_keep_plan("SELECT min(coalesce(not_before, '-infinity'))"
									  "  FROM batchflow.item"
									  " WHERE loop_ref = $1 AND status IN ('pending', 'running')", 1);
	}

	if (SPI_execute_plan(open_loops_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list open loops");
	loops = SPI_tuptable;
	nloops = SPI_processed;

	/* Round robin: start after the loop served last. */
	while (first < nloops)
	{
		bool		isnull;

		if (DatumGetInt64(SPI_getbinval(loops->vals[first], loops->tupdesc, 1, &isnull)) > rr_cursor)
			break;
		first++;
	}

	for (uint64 n = 0; n < nloops; n++)
	{
		HeapTuple	lt = loops->vals[(first + n) % nloops];
		bool		isnull;
		int64		loop_ref = DatumGetInt64(SPI_getbinval(lt, loops->tupdesc, 1, &isnull));
		bool		running = DatumGetBool(SPI_getbinval(lt, loops->tupdesc, 2, &isnull));
		int			cap = DatumGetInt32(SPI_getbinval(lt, loops->tupdesc, 3, &isnull));
		bool		sequential = DatumGetBool(SPI_getbinval(lt, loops->tupdesc, 4, &isnull));
		Datum		arg = Int64GetDatum(loop_ref);
		LOCKTAG		tag;
		Datum		due;

		if (!running)
		{
			if (*nclose < BF_MAX_CLOSE)
				close_list[(*nclose)++] = loop_ref;
			continue;
		}
		if (!bf_take_slot(loop_ref, cap, &tag))
			continue;

		if (SPI_execute_plan(sequential ? claim_sequential_plan : claim_parallel_plan,
							 &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not claim an item of loop " INT64_FORMAT, loop_ref);

		if (SPI_processed == 1)
		{
			HeapTuple	it = SPI_tuptable->vals[0];
			TupleDesc	id = SPI_tuptable->tupdesc;

			if (sequential)
			{
				Datum		nb = SPI_getbinval(it, id, 4, &isnull);

				if (!isnull && DatumGetTimestampTz(nb) > now)
				{
					/* The next item in order is backing off: wait for it. */
					LockRelease(&tag, ExclusiveLock, false);
					*next_due = Min(*next_due, DatumGetTimestampTz(nb));
					continue;
				}
			}

			claim->loop = bf_loop_info(loop_ref);
			if (claim->loop == NULL)
			{
				LockRelease(&tag, ExclusiveLock, false);
				continue;
			}
			claim->idx = DatumGetInt32(SPI_getbinval(it, id, 1, &isnull));
			claim->item = SPI_getbinval(it, id, 2, &claim->item_isnull);
			claim->attempts = DatumGetInt32(SPI_getbinval(it, id, 3, &isnull));
			claim->started_at = GetCurrentTimestamp();
			rr_cursor = loop_ref;
			return true;
		}

		/* Nothing claimable: free the slot and see why. */
		LockRelease(&tag, ExclusiveLock, false);
		if (SPI_execute_plan(remaining_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not inspect loop " INT64_FORMAT, loop_ref);
		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
		{
			if (*nclose < BF_MAX_CLOSE)
				close_list[(*nclose)++] = loop_ref;
		}
		else if (DatumGetTimestampTz(due) > now)
			*next_due = Min(*next_due, DatumGetTimestampTz(due));
	}
	return false;
}
