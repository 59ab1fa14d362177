/*-------------------------------------------------------------------------
 *
 * http_claim.c
 *	  Claiming many items of one HTTP loop in one statement, for an HTTP
 *	  batch (http_batch.c) that has room for several requests at once.
 *
 *	  Claiming one item at a time (claim.c) costs a look at the loop, an
 *	  index scan, a second look at the loop and an UPDATE per item; the scan
 *	  walks past the index entries of every item claimed since the last
 *	  vacuum that a snapshot still sees (a session in bf_wait keeps them
 *	  all), so refilling 100 requests cost 100 such walks.  Here a batch of
 *	  n items costs n cap locks (lock manager only), one look at the loop
 *	  and one statement that locks, marks running and returns the items.
 *
 *	  The rules are claim.c's: each item holds one of the loop's cap locks,
 *	  taken (transaction level, no wait) before the item is claimed; the
 *	  loop's status and its run's pause are read with a snapshot taken
 *	  after the cap locks; items are taken in index order with FOR UPDATE
 *	  SKIP LOCKED, from this worker's claim hint, and from index 0 when
 *	  there is no hint or the last scan from 0 is long enough ago (below:
 *	  its cost grows with the loop); a throttled loop
 *	  admits each item through bf_throttle_admit and gets back the
 *	  admissions of cap locks that found no item.  Cap locks taken here are
 *	  reported as this backend's own (bf_http_claim_pending) until the
 *	  caller adopts the items, so one batch never takes a cap lock twice.
 *	  Sequential, dependsOn and workflow loops keep claim.c's one-at-a-time
 *	  claim (their order and room rules live there).
 *
 * IDENTIFICATION
 *	  src/http_claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "bigbatch.h"
#include "claim.h"
#include "claim_hint.h"
#include "http_claim.h"
#include "run_control.h"
#include "spi_util.h"

/*
 * A scan from index 0 (for items put back below the hint: retries, items of
 * a dead worker) walks every index entry of the loop that a snapshot still
 * sees, which grows with the items done.  It runs at most every
 * BF_HTTP_FULL_SCAN_MIN_MS, and no more often than keeps its share of the
 * time under 1 / BF_HTTP_FULL_SCAN_SHARE (measured on the last one).
 */
#define BF_HTTP_FULL_SCAN_MIN_MS 100
#define BF_HTTP_FULL_SCAN_SHARE 20
static int64 full_scan_loop = 0;
static TimestampTz full_scan_after = 0;

static SPIPlanPtr running_plan = NULL;
static SPIPlanPtr claim_plan = NULL;

/* Cap locks taken by the batch being claimed, not yet adopted. */
static LOCKTAG *pending_tags = NULL;
static int	pending_size = 0;
static int	npending = 0;

static int	bf_http_claim_from(BfLoopInfo *loop, int32 from, int want,
							   TimestampTz now, BfClaim *claims, int nclaimed);

/* Is the cap lock one taken by the batch being claimed right now? */
bool
bf_http_claim_pending(const LOCKTAG *tag)
{
	for (int i = 0; i < npending; i++)
		if (memcmp(&pending_tags[i], tag, sizeof(LOCKTAG)) == 0)
			return true;
	return false;
}

/*
 * Lock, mark running (worker_pid = this process) and return up to want
 * pending items of the loop from index "from" on, into claims[nclaimed..]
 * (inside SPI); returns how many.
 */
static int
bf_http_claim_from(BfLoopInfo *loop, int32 from, int want, TimestampTz now,
				   BfClaim *claims, int nclaimed)
{
	Datum		args[5];
	int			rc;

	static const char *const no_sort[1] = {"enable_sort"};

	static const Oid types[5] = {INT8OID, INT4OID, INT4OID, INT4OID, TIMESTAMPTZOID};

	/*
	 * The ARRAY(...) is run once (an init plan): it locks the items in
	 * index order, skipping those another worker holds; the UPDATE then
	 * marks exactly those, found by their row addresses: a TID scan,
	 * whatever the statistics say (with a condition on loop_ref the planner,
	 * without statistics on a fresh table, chose to read every index entry
	 * of the loop, dead ones included).  No condition on status is needed:
	 * the lock was granted on the latest version, after checking it is
	 * pending, and is held, so no one else changes the row meanwhile.
	 */
	bf_keep_plan(&claim_plan,
				 "UPDATE batchflow.item"
				 "   SET status = 'running', worker_pid = $4, started_at = $5"
				 " WHERE ctid = ANY (ARRAY("
				 "       SELECT ctid FROM batchflow.item"
				 "        WHERE loop_ref = $1 AND idx >= $2 AND status = 'pending'"
				 "          AND (not_before IS NULL OR not_before <= clock_timestamp())"
				 "        ORDER BY idx LIMIT $3"
				 "          FOR UPDATE SKIP LOCKED))"
				 " RETURNING idx, item, attempts", 5, types);
	args[0] = Int64GetDatum(loop->loop_ref);
	args[1] = Int32GetDatum(from);
	args[2] = Int32GetDatum(want);
	args[3] = Int32GetDatum(MyProcPid);
	args[4] = TimestampTzGetDatum(now);
	/*
	 * Planned with sorting off: the plan must read item_claim_idx in index
	 * order and stop after $3 items.  With a generic LIMIT $3 (the planner
	 * then assumes 10 % of the rows) or statistics from when the table was
	 * small, it otherwise chose to read every entry of the loop from $2 on,
	 * dead ones included, and sort them.
	 */
	rc = bf_execute_plan_without(claim_plan, args, NULL, no_sort, 1);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim items of loop " INT64_FORMAT, loop->loop_ref);
	Assert(SPI_processed <= (uint64) want);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		BfClaim    *c = &claims[nclaimed + i];
		bool		isnull;

		c->loop = loop;
		c->idx = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		c->item = SPI_getbinval(tup, desc, 2, &c->item_isnull);
		c->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		c->started_at = now;
	}
	return (int) SPI_processed;
}

/*
 * Claim up to "want" items of the loop for this worker's HTTP batch, in
 * the current transaction (inside SPI), taking first the nreuse cap locks
 * in reuse (those of this worker's items that have just finished, which it
 * still holds at session level).  Each claim in claims[0..n-1] holds its
 * own cap lock (transaction level) and its item is already marked running
 * with this worker's pid.  Returns n (0 when the loop has
 * no free cap lock, is not running, its run is paused or nothing is
 * claimable), or -1 when the loop is of a kind claimed one at a time
 * (bf_claim_for_http).
 */
int
bf_http_claim_batch(BfLoopInfo *loop, int want, const LOCKTAG *reuse,
					int nreuse, BfClaim *claims)
{
	Datum		arg = Int64GetDatum(loop->loop_ref);
	TimestampTz now = GetCurrentTimestamp();
	BfClaimHint *hint;
	int			nlocks = 0;
	int			r = 0;
	int			n = 0;
	int32		maxidx = -1;
	Oid			argtype = INT8OID;

	if (loop->sequential || loop->has_deps || loop->has_workflow)
		return -1;
	if (want <= 0)
		return 0;

	/* The cap locks first, each admitted by the loop's throttle. */
	npending = 0;
	if (pending_size < want)
	{
		if (pending_tags != NULL)
			pfree(pending_tags);
		pending_tags = MemoryContextAlloc(TopMemoryContext, sizeof(LOCKTAG) * want);
		pending_size = want;
	}
	while (nlocks < want)
	{
		TimestampTz due = DT_NOEND;
		bool		got = false;

		/* First the cap locks of our items that just finished, then any. */
		while (!got && r < nreuse)
		{
			pending_tags[nlocks] = reuse[r++];
			got = LockAcquire(&pending_tags[nlocks], ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
		}
		if (!got && !bf_take_cap_lock(loop->loop_ref, loop->concurrency, &pending_tags[nlocks]))
			break;
		if (!bf_throttle_admit(loop->loop_ref, now, &due))
		{
			LockRelease(&pending_tags[nlocks], ExclusiveLock, false);
			break;
		}
		nlocks++;
		npending = nlocks;
	}

	/*
	 * With a snapshot taken after the cap locks: a loop stopped (fail-fast,
	 * cancel) or a run paused since the caller looked gets nothing.
	 */
	if (nlocks > 0)
	{
		bf_keep_plan(&running_plan,
					 "SELECT 1 FROM batchflow.loop l WHERE id = $1 AND status = 'running'"
					 "   AND NOT " BF_RUN_PAUSED("l.run_id"), 1, &argtype);
		if (SPI_execute_plan(running_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up loop " INT64_FORMAT, loop->loop_ref);
		if (SPI_processed == 1)
		{
			hint = bf_claim_hint(loop->loop_ref);
			if (full_scan_loop != loop->loop_ref)
			{
				full_scan_loop = loop->loop_ref;
				full_scan_after = 0;
			}
			if (hint->next > 0 && now < full_scan_after)
				n = bf_http_claim_from(loop, hint->next, nlocks, now, claims, 0);
			else
			{
				TimestampTz start = GetCurrentTimestamp();
				TimestampTz done;

				n = bf_http_claim_from(loop, 0, nlocks, now, claims, 0);
				done = GetCurrentTimestamp();
				full_scan_after = done +
					Max((int64) BF_HTTP_FULL_SCAN_MIN_MS * 1000,
						(done - start) * BF_HTTP_FULL_SCAN_SHARE);
			}
		}
	}

	/* Give each claim a cap lock; give back the ones left over. */
	for (int i = 0; i < nlocks; i++)
	{
		if (i < n)
		{
			claims[i].cap_lock = pending_tags[i];
			maxidx = Max(maxidx, claims[i].idx);
		}
		else
		{
			bf_throttle_refund(loop->loop_ref);
			LockRelease(&pending_tags[i], ExclusiveLock, false);
		}
	}
	npending = 0;
	if (n > 0)
		bf_claim_hint(loop->loop_ref)->next = maxidx + 1;
	return n;
}

/* After an error in a claim: no cap lock is pending any more. */
void
bf_http_claim_reset(void)
{
	npending = 0;
}
