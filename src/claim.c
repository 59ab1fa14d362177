/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Choosing the next item to execute: a loop in round-robin order, a
 *	  free cap lock under that loop's cap, and the loop's next pending item.
 *
 *	  The cap is enforced with cap locks: loop L with cap c has c lock tags
 *	  (advisory-lock tags in a key space SQL's pg_advisory_* functions never
 *	  use), and a worker must hold one, in ExclusiveLock mode, for as long
 *	  as it executes an item of L.  The lock is transaction-scoped and the
 *	  item's effects, its completion and the release of the cap lock all happen
 *	  at the same commit, so at no instant can more than c items of L
 *	  execute: not with many workers, not across crashes (the lock manager
 *	  forgets everything on restart, and so do the items' transactions).
 *	  The cap lock is free again the moment the item commits, and the worker
 *	  that freed it immediately looks for the next item.
 *
 *	  Under a cap lock, the item is claimed with FOR UPDATE SKIP LOCKED in
 *	  index order, through the partial index item_claim_idx.  Sequential
 *	  loops have one cap lock and take strictly the lowest pending index, even
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
#include "claim.h"
#include "claim_hint.h"
#include "deps.h"
#include "run_control.h"
#include "spi_util.h"
#include "wakeup.h"
#include "activity_workflow.h"

/* Is the loop's child a workflow (activity_workflow.c)?  Over batchflow.loop. */
#define BF_CHILD_RUNS_SQL \
	"coalesce(node ->> 'activity' = 'workflow'" \
	" OR node #>> '{children,0,activity}' = 'workflow', false)"
#include "bigbatch.h"

/* Slot locks use advisory tags with field4 >= this; SQL uses 1 and 2. */
#define BF_CAP_LOCK_BASE 16

/*
 * Set by http_batch.c: does this backend already hold this cap lock at session
 * level for an item still executing?  The lock manager would grant it again (a backend
 * never conflicts with itself), so such cap locks must be skipped.
 */
bool		(*bf_cap_lock_is_mine_hook) (const LOCKTAG *tag) = NULL;

/* The id of the loop served last, for round-robin fairness between loops. */
static int64 rr_cursor = 0;

static SPIPlanPtr open_loops_plan = NULL;
static SPIPlanPtr claim_parallel_plan = NULL;
static SPIPlanPtr claim_parallel_from_plan = NULL;

/*
 * Every BF_FULL_SCAN_EVERY-th claim of a parallel loop, the scan starts at
 * index 0 rather than at this worker's hint (claim_hint.c).
 */
#define BF_FULL_SCAN_EVERY 64

static SPIPlanPtr claim_sequential_plan = NULL;
static SPIPlanPtr remaining_plan = NULL;
static SPIPlanPtr loop_running_plan = NULL;

/* What bf_claim_under_cap found in one loop. */
typedef enum BfLoopClaim
{
	BF_CLAIMED,					/* cap lock held, item row locked */
	BF_NO_CAP_LOCK,				/* all of the loop's cap locks are held */
	BF_BACKING_OFF,				/* sequential: the next item waits for a retry */
	BF_NOTHING_PENDING			/* no claimable item */
} BfLoopClaim;

static SPIPlanPtr bf_keep_claim_plan(SPIPlanPtr *plan, const char *sql, int nargs);
static void bf_prepare_claim_plans(void);
static void bf_claim_fill(BfClaim *claim, SPITupleTable *claimed, const LOCKTAG *tag);
static void bf_cap_lock_tag(LOCKTAG *tag, int64 loop_ref, int slot);
static BfLoopClaim bf_claim_under_cap(int64 loop_ref, int cap, bool sequential,
									bool deps, bool children, TimestampTz now,
									LOCKTAG *tag, TimestampTz *due);

PG_FUNCTION_INFO_V1(bf_claim_item);

/* Keep a statement taking ($1 bigint, $2 int) or fewer. */
static SPIPlanPtr
bf_keep_claim_plan(SPIPlanPtr *plan, const char *sql, int nargs)
{
	static const Oid types[2] = {INT8OID, INT4OID};

	return bf_keep_plan(plan, sql, nargs, types);
}

/* The lock tag of cap lock number "slot" (0 .. cap - 1) of loop "loop_ref". */
static void
bf_cap_lock_tag(LOCKTAG *tag, int64 loop_ref, int slot)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId,
						 (uint32) ((uint64) loop_ref >> 32),
						 (uint32) loop_ref,
						 BF_CAP_LOCK_BASE + slot);
}

/*
 * Take any free cap lock of the loop without waiting; false if all c are held.
 * Workers start their search at different cap locks to avoid colliding.
 */
bool
bf_take_cap_lock(int64 loop_ref, int cap, LOCKTAG *tag)
{
	int			start = MyProcPid % cap;

	for (int i = 0; i < cap; i++)
	{
		bf_cap_lock_tag(tag, loop_ref, (start + i) % cap);
		if (bf_cap_lock_is_mine_hook && bf_cap_lock_is_mine_hook(tag))
			continue;
		if (LockAcquire(tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
			return true;
	}
	return false;
}

/* Prepare the claim statements on first use, and keep them. */
static void
bf_prepare_claim_plans(void)
{
	if (open_loops_plan != NULL)
		return;
	/* A paused run's running loops are left out (run_control.c). */
	bf_keep_claim_plan(&open_loops_plan, "SELECT id, status = 'running', concurrency, sequential,"
								   "       node ? 'dependsOn', " BF_CHILD_RUNS_SQL
								   "  FROM batchflow.loop l WHERE finished_at IS NULL"
								   "   AND NOT (status = 'running' AND " BF_RUN_PAUSED("l.run_id") ")"
								   " ORDER BY id", 0);
	bf_keep_claim_plan(&claim_parallel_plan, "SELECT idx, item, attempts FROM batchflow.item"
									   " WHERE loop_ref = $1 AND status = 'pending'"
									   "   AND (not_before IS NULL OR not_before <= clock_timestamp())"
									   " ORDER BY idx LIMIT 1"
									   " FOR UPDATE SKIP LOCKED", 1);
	bf_keep_claim_plan(&claim_parallel_from_plan, "SELECT idx, item, attempts FROM batchflow.item"
											" WHERE loop_ref = $1 AND idx >= $2 AND status = 'pending'"
											"   AND (not_before IS NULL OR not_before <= clock_timestamp())"
											" ORDER BY idx LIMIT 1"
											" FOR UPDATE SKIP LOCKED", 2);
	bf_keep_claim_plan(&claim_sequential_plan, "SELECT idx, item, attempts, not_before, status"
										 "  FROM batchflow.item"
										 " WHERE loop_ref = $1 AND status IN ('pending', 'running')"
										 " ORDER BY idx LIMIT 1"
										 " FOR UPDATE SKIP LOCKED", 1);
	bf_keep_claim_plan(&loop_running_plan, "SELECT 1 FROM batchflow.loop l WHERE id = $1 AND status = 'running'"
											"   AND NOT " BF_RUN_PAUSED("l.run_id"), 1);
	bf_keep_claim_plan(&remaining_plan, "SELECT min(coalesce(not_before, '-infinity'))"
								  "  FROM batchflow.item"
								  " WHERE loop_ref = $1 AND status IN ('pending', 'running')", 1);
}

/*
 * Take a cap lock of one loop and lock its next claimable item (inside SPI).
 * On BF_CLAIMED the item's row (idx, item, attempts) is SPI_tuptable's
 * first row and both locks are held until the transaction ends; otherwise
 * nothing is held.  *tag is the cap lock taken, if any.  On BF_BACKING_OFF
 * *due is when the next item is due.  A dependsOn loop (deps) takes the
 * lowest ready index, from item_ready (deps_claim.c).
 * A loop whose child is a workflow (children) counts its child runs in
 * flight against the cap: its claims take cap lock 0 only, one at a time,
 * and find no room while cap items wait for a child (bf_children_room).
 */
static BfLoopClaim
bf_claim_under_cap(int64 loop_ref, int cap, bool sequential, bool deps,
				   bool children, TimestampTz now, LOCKTAG *tag, TimestampTz *due)
{
	Datum		arg = Int64GetDatum(loop_ref);
	BfClaimHint *hint;

	if (!bf_take_cap_lock(loop_ref, children ? 1 : cap, tag))
		return BF_NO_CAP_LOCK;
	if (children && !bf_children_room(loop_ref, cap))
	{
		LockRelease(tag, ExclusiveLock, false);
		return BF_NO_CAP_LOCK;
	}
	/* A throttled loop: not yet (throttle.c); wait like a retry backoff. */
	if (!bf_throttle_admit(loop_ref, GetCurrentTimestamp(), due))
	{
		LockRelease(tag, ExclusiveLock, false);
		return BF_BACKING_OFF;
	}

	hint = bf_claim_hint(loop_ref);
	SPI_processed = 0;
	/*
	 * Only workers use hints: batchflow.claim_item must stay repeatable.
	 * In a dependsOn loop an item below the hint may become ready at any
	 * time: the worker that makes it ready lowers its own hint to it
	 * (bf_claim_hint_lower), the others find it at their next full scan.
	 */
	if (IsBackgroundWorker && !sequential && hint->next > 0 &&
		++hint->claims % BF_FULL_SCAN_EVERY != 0)
	{
		Datum		args[2] = {arg, Int32GetDatum(hint->next)};

		/* dependsOn: ready items only, from batchflow.item_ready (deps_claim.c). */
		if (deps)
			(void) bf_deps_claim_ready(loop_ref, hint->next, false);
		else if (SPI_execute_plan(claim_parallel_from_plan,
								  args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not claim an item of loop " INT64_FORMAT, loop_ref);
	}
	if (SPI_processed == 0 && deps)
		(void) bf_deps_claim_ready(loop_ref, 0, false);
	else if (SPI_processed == 0 &&
			 SPI_execute_plan(sequential ? claim_sequential_plan : claim_parallel_plan,
							  &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not claim an item of loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 1 && !sequential)
	{
		bool		isnull;

		hint->next = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull)) + 1;
	}

	if (SPI_processed == 1 && sequential)
	{
		bool		isnull;
		Datum		nb = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   4, &isnull);
		char	   *status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5);

		/*
		 * The lowest unfinished index is still marked running by an HTTP
		 * worker that died holding it: strict order means waiting until
		 * the launcher re-queues it.
		 */
		if (strcmp(status, "running") == 0)
		{
			bf_throttle_refund(loop_ref);
			LockRelease(tag, ExclusiveLock, false);
			return BF_NOTHING_PENDING;
		}

		if (!isnull && DatumGetTimestampTz(nb) > now)
		{
			/* The next item in order is backing off: wait for it. */
			bf_throttle_refund(loop_ref);
			LockRelease(tag, ExclusiveLock, false);
			*due = DatumGetTimestampTz(nb);
			return BF_BACKING_OFF;
		}
	}
	/*
	 * The list of open loops came from an earlier snapshot: a fail-fast
	 * failure or a cancel may have stopped the loop since, and released
	 * the cap lock just taken.  Look again with a snapshot taken after the
	 * lock (the stopping transaction is visible once its locks are gone),
	 * so that no item starts after its loop stopped or its run was paused
	 * (the same statement as bf_claim_for_http's).  (Workers only:
	 * batchflow.claim_item claims from closed loops for the race tests.)
	 */
	if (SPI_processed == 1 && IsBackgroundWorker)
	{
		SPITupleTable *claimed = SPI_tuptable;

		if (SPI_execute_plan(loop_running_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read loop " INT64_FORMAT, loop_ref);
		if (SPI_processed == 0)
		{
			LockRelease(tag, ExclusiveLock, false);
			return BF_NOTHING_PENDING;
		}
		SPI_tuptable = claimed;
		SPI_processed = 1;
	}
	if (SPI_processed == 1)
		return BF_CLAIMED;

	bf_throttle_refund(loop_ref);
	LockRelease(tag, ExclusiveLock, false);
	return BF_NOTHING_PENDING;
}

/*
 * Claim the next item to execute, in the current transaction (inside SPI).
 * On success the item's row is locked and a cap lock of its loop is held until
 * the transaction ends.  Otherwise *next_due is lowered to the earliest
 * retry backoff that ends in the future, and loops that look finished (or
 * that were stopped) are appended to *close_list for the caller to close
 * after this transaction (at most BF_MAX_CLOSE of them).
 */
bool
bf_claim_next_item(BfClaim *claim, TimestampTz *next_due,
			  int64 *close_list, int *nclose)
{
	uint64		nloops;
	SPITupleTable *loops;
	uint64		first = 0;
	TimestampTz now = GetCurrentTimestamp();

	bf_prepare_claim_plans();
	bf_claim_saw_work = false;

	if (SPI_execute_plan(open_loops_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list open loops");
	loops = SPI_tuptable;
	nloops = SPI_processed;

	/*
	 * Forget cached loops that closed meanwhile (the list is by id); only
	 * when the cache holds more loops than are open, not on every claim.
	 */
	if (bf_loop_cache_count() > (int) nloops)
	{
		int64	   *ids = palloc(sizeof(int64) * Max(nloops, 1));

		for (uint64 i = 0; i < nloops; i++)
		{
			bool		isnull;

			ids[i] = DatumGetInt64(SPI_getbinval(loops->vals[i], loops->tupdesc, 1, &isnull));
		}
		bf_loop_cache_retain(ids, (int) nloops);
		pfree(ids);
	}

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
		bool		deps = DatumGetBool(SPI_getbinval(lt, loops->tupdesc, 5, &isnull));
		bool		children = DatumGetBool(SPI_getbinval(lt, loops->tupdesc, 6, &isnull));
		Datum		arg = Int64GetDatum(loop_ref);
		TimestampTz due = DT_NOEND;
		LOCKTAG		tag;
		Datum		remaining;

		if (!running)
		{
			if (*nclose < BF_MAX_CLOSE)
				close_list[(*nclose)++] = loop_ref;
			continue;
		}

		switch (bf_claim_under_cap(loop_ref, cap, sequential, deps, children, now, &tag, &due))
		{
			case BF_NO_CAP_LOCK:
				bf_claim_saw_work = true;
				continue;
			case BF_BACKING_OFF:
				bf_claim_saw_work = true;
				*next_due = Min(*next_due, due);
				continue;
			case BF_CLAIMED:
				{
					SPITupleTable *claimed = SPI_tuptable;

					bf_claim_saw_work = true;
					claim->loop = bf_loop_info(loop_ref);
					if (claim->loop == NULL)
					{
						/* The loop was deleted meanwhile. */
						LockRelease(&tag, ExclusiveLock, false);
						continue;
					}
					bf_claim_fill(claim, claimed, &tag);
					rr_cursor = loop_ref;
					return true;
				}
			case BF_NOTHING_PENDING:
				break;
		}

		/* Nothing claimable: see why. */
		if (SPI_execute_plan(remaining_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not inspect loop " INT64_FORMAT, loop_ref);
		remaining = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		/* A loop still materialising its items is not finished (source_fill.c). */
		if (isnull && !bf_loop_filling(loop_ref))
		{
			if (*nclose < BF_MAX_CLOSE)
				close_list[(*nclose)++] = loop_ref;
		}
		else
		{
			bf_claim_saw_work = true;
			if (DatumGetTimestampTz(remaining) > now)
				*next_due = Min(*next_due, DatumGetTimestampTz(remaining));
		}
	}
	return false;
}

/*
 * Claim one more item of the given loop for an HTTP batch (inside SPI):
 * a free cap lock this backend does not hold yet, then the next claimable
 * item.  False if the loop is no longer running, has no free cap lock, or has
 * nothing claimable now.  On success the cap lock and the row are locked for
 * the transaction and claim is filled in (item in the current context).
 */
bool
bf_claim_for_http(BfLoopInfo *loop, BfClaim *claim)
{
	Datum		arg = Int64GetDatum(loop->loop_ref);
	TimestampTz due = DT_NOEND;
	LOCKTAG		tag;

	bf_prepare_claim_plans();
	if (SPI_execute_plan(loop_running_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up loop " INT64_FORMAT, loop->loop_ref);
	if (SPI_processed == 0)
		return false;
	if (bf_claim_under_cap(loop->loop_ref, loop->concurrency, loop->sequential,
						   loop->has_deps, loop->has_workflow, GetCurrentTimestamp(),
						   &tag, &due) != BF_CLAIMED)
		return false;

	claim->loop = loop;
	bf_claim_fill(claim, SPI_tuptable, &tag);
	return true;
}

/*
 * Run each claim statement once against loop loop_ref (inside SPI), taking
 * no cap lock and keeping nothing: the worker's rehearsal of a claim
 * (worker_warmup.c), on a loop that has no item.
 */
void
bf_claim_rehearse(int64 loop_ref)
{
	SPIPlanPtr	plans[] = {NULL, NULL, NULL, NULL, NULL, NULL};
	Datum		args[2] = {Int64GetDatum(loop_ref), Int32GetDatum(0)};

	bf_prepare_claim_plans();
	plans[0] = open_loops_plan;
	plans[1] = claim_parallel_plan;
	plans[2] = claim_parallel_from_plan;
	plans[3] = claim_sequential_plan;
	plans[4] = loop_running_plan;
	plans[5] = remaining_plan;
	for (int i = 0; i < lengthof(plans); i++)
		if (SPI_execute_plan(plans[i], SPI_getargcount(plans[i]) > 0 ? args : NULL,
							 NULL, false, 1) < 0)
			elog(ERROR, "could not rehearse a claim of loop " INT64_FORMAT, loop_ref);
}

/* Fill claim from the claimed row (idx, item, attempts) and its cap lock. */
static void
bf_claim_fill(BfClaim *claim, SPITupleTable *claimed, const LOCKTAG *tag)
{
	HeapTuple	it = claimed->vals[0];
	TupleDesc	id = claimed->tupdesc;
	bool		isnull;

	claim->idx = DatumGetInt32(SPI_getbinval(it, id, 1, &isnull));
	claim->item = SPI_getbinval(it, id, 2, &claim->item_isnull);
	claim->attempts = DatumGetInt32(SPI_getbinval(it, id, 3, &isnull));
	claim->started_at = GetCurrentTimestamp();
	claim->cap_lock = *tag;
}

/*
 * batchflow.claim_item(loop_ref bigint) returns int
 *
 * A diagnostic and testing entry point: claim the next item of one loop
 * exactly as a worker does (a free cap lock under the loop's cap, then the
 * next pending item with FOR UPDATE SKIP LOCKED) and return its index, or
 * NULL when no cap lock is free or nothing is claimable.  Both locks are held
 * until the caller's transaction ends; the item itself is not executed or
 * changed.  A second call in the same transaction keeps the one cap lock it
 * holds and finds the same item again.  The loop's status is not looked
 * at: which loops the workers serve is decided when they list the open
 * loops, not in the claim.
 * Isolation tests race sessions through it; an administrator can use it
 * to see whether a loop has a free cap lock, or to hold one.
 */
Datum
bf_claim_item(PG_FUNCTION_ARGS)
{
	int64		loop_ref = PG_GETARG_INT64(0);
	Datum		arg = Int64GetDatum(loop_ref);
	Oid			argtype = INT8OID;
	bool		isnull;
	int			cap;
	bool		sequential;
	bool		deps;
	bool		children;
	TimestampTz due = DT_NOEND;
	LOCKTAG		tag;
	bool		claimed;
	int32		idx = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bf_prepare_claim_plans();

	if (SPI_execute_with_args("SELECT concurrency, sequential, node ? 'dependsOn', " BF_CHILD_RUNS_SQL
							  "  FROM batchflow.loop WHERE id = $1",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("loop " INT64_FORMAT " does not exist", loop_ref),
				 errhint("Loop ids are in batchflow.loop.id.")));
	cap = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	sequential = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	deps = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	children = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));

	claimed = bf_claim_under_cap(loop_ref, cap, sequential, deps, children,
								 GetCurrentTimestamp(), &tag, &due) == BF_CLAIMED;
	if (claimed)
		idx = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	if (!claimed)
		PG_RETURN_NULL();
	PG_RETURN_INT32(idx);
}
