/*-------------------------------------------------------------------------
 *
 * throttle.c
 *	  Per-loop throttles, applied when a worker is about to start an item:
 *	  "maxItemsPerSecond" (a rate) and "maxReplicationLag" (no new item
 *	  while a standby's replay_lag is above the limit).
 *
 *	  The rate is a generic cell rate algorithm kept in shared memory, one
 *	  entry per throttled loop: the theoretical start time of the loop's
 *	  next item (tat) advances by 1/rate for every admitted item, and an
 *	  item may start once the clock has reached tat.  Every worker admits
 *	  through the same entry under the table's LWLock ("batchflow
 *	  throttles"), so the spacing holds across the whole pool.  An LWLock,
 *	  not a spinlock: finding a loop's entry probes the table (up to
 *	  BF_THROTTLE_ENTRIES entries), and bf_progress reads it in shared
 *	  mode.  The clock is read before the lock is taken.  A worker that wakes late may start the next
 *	  item at once (tat never falls more than one interval behind the
 *	  clock), so lateness does not accumulate, and a burst is at most two
 *	  items.  An admitted item that is not claimed after all is refunded.
 *
 *	  The lag is read from pg_stat_replication by each worker at most every
 *	  BF_LAG_REFRESH_MS.  A refused admission says when to look again, so
 *	  the worker sleeps on its latch until then (claim.c treats it like a
 *	  retry backoff), and marks the loop held back: bf_progress shows its
 *	  status as 'throttled' (batchflow._loop_throttled) for a moment after
 *	  each refusal.
 *
 *	  Shared state is only an optimisation of pacing: after a restart it
 *	  starts empty, which at worst lets one item start early.
 *
 * IDENTIFICATION
 *	  src/throttle.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "bigbatch.h"

#define BF_THROTTLE_ENTRIES 256
#define BF_THROTTLE_CACHE 64
#define BF_LAG_REFRESH_MS 100
#define BF_LAG_RECHECK_MS 100
#define BF_HELD_SHOW_MS 300
/* An idle entry may be reused after this long. */
#define BF_THROTTLE_IDLE_US (60 * USECS_PER_SEC)

typedef struct BfThrottleEntry
{
	Oid			dboid;			/* InvalidOid: free */
	int64		loop_ref;
	TimestampTz tat;			/* when the next item may start */
	TimestampTz held_until;		/* show 'throttled' until then */
	TimestampTz used_at;
} BfThrottleEntry;

typedef struct BfThrottleShared
{
	BfThrottleEntry entries[BF_THROTTLE_ENTRIES];	/* under throttle_lock */
} BfThrottleShared;

/* What a worker knows of a loop's throttles; direct-mapped by loop id. */
typedef struct BfThrottleCache
{
	int64		loop_ref;		/* 0: empty */
	double		interval_us;	/* 0: no rate limit */
	int64		max_lag_us;		/* 0: no lag limit */
} BfThrottleCache;

static BfThrottleShared *throttle_state = NULL;
static LWLock *throttle_lock = NULL;
static shmem_request_hook_type prev_request_hook = NULL;
static shmem_startup_hook_type prev_startup_hook = NULL;
static BfThrottleCache cache[BF_THROTTLE_CACHE];
static SPIPlanPtr settings_plan = NULL;
static SPIPlanPtr lag_plan = NULL;
static TimestampTz lag_read_at = 0;
static int64 lag_us = 0;

PG_FUNCTION_INFO_V1(bf_loop_throttled);

/* Reserve the shared table. */
static void
bf_throttle_request(void)
{
	if (prev_request_hook)
		prev_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(BfThrottleShared)));
	RequestNamedLWLockTranche("batchflow throttles", 1);
}

/* Create or attach to the shared table. */
static void
bf_throttle_startup(void)
{
	bool		found;

	if (prev_startup_hook)
		prev_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	throttle_state = ShmemInitStruct("batchflow throttles", sizeof(BfThrottleShared), &found);
	if (!found)
		memset(throttle_state, 0, sizeof(BfThrottleShared));
	throttle_lock = &(GetNamedLWLockTranche("batchflow throttles"))->lock;
	LWLockRelease(AddinShmemInitLock);
}

/* From _PG_init, when preloaded: chain the shared-memory hooks. */
void
bf_throttle_init(void)
{
	prev_request_hook = shmem_request_hook;
	shmem_request_hook = bf_throttle_request;
	prev_startup_hook = shmem_startup_hook;
	shmem_startup_hook = bf_throttle_startup;
}

/* The loop's throttle settings, read once per worker (inside SPI). */
static BfThrottleCache *
bf_throttle_settings(int64 loop_ref)
{
	BfThrottleCache *c = &cache[(uint64) loop_ref % BF_THROTTLE_CACHE];
	Datum		arg = Int64GetDatum(loop_ref);
	bool		isnull;
	Datum		d;

	if (c->loop_ref == loop_ref)
		return c;
	if (settings_plan == NULL)
	{
		Oid			type = INT8OID;

		settings_plan = SPI_prepare("SELECT (node ->> 'maxItemsPerSecond')::float8,"
									"       node ->> 'maxReplicationLag'"
									"  FROM batchflow.loop WHERE id = $1", 1, &type);
		if (settings_plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(settings_plan);
	}
	if (SPI_execute_plan(settings_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the throttles of loop " INT64_FORMAT, loop_ref);
	c->loop_ref = loop_ref;
	c->interval_us = 0;
	c->max_lag_us = 0;
	if (SPI_processed == 1)
	{
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull && DatumGetFloat8(d) > 0)
			c->interval_us = (double) USECS_PER_SEC / DatumGetFloat8(d);
		if (SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull), !isnull)
			c->max_lag_us = Max(bf_interval_usecs(SPI_getvalue(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 2)), 0);
	}
	return c;
}

/* The largest replay_lag of any standby, in microseconds (inside SPI). */
static int64
bf_replication_lag(TimestampTz now)
{
	bool		isnull;
	Datum		d;

	if (lag_read_at != 0 && !TimestampDifferenceExceeds(lag_read_at, now, BF_LAG_REFRESH_MS))
		return lag_us;
	if (lag_plan == NULL)
	{
		lag_plan = SPI_prepare("SELECT (extract(epoch FROM max(replay_lag)) * 1000000)::int8"
							   "  FROM pg_catalog.pg_stat_replication", 0, NULL);
		if (lag_plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(lag_plan);
	}
	if (SPI_execute_plan(lag_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_stat_replication");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	lag_us = isnull ? 0 : DatumGetInt64(d);
	lag_read_at = now;
	return lag_us;
}

/* The shared entry of a loop, created if needed (throttle_lock held exclusively). */
static BfThrottleEntry *
bf_throttle_entry(int64 loop_ref, TimestampTz now)
{
	BfThrottleEntry *free_entry = NULL;
	int			start = (int) ((uint64) loop_ref % BF_THROTTLE_ENTRIES);

	for (int i = 0; i < BF_THROTTLE_ENTRIES; i++)
	{
		BfThrottleEntry *e = &throttle_state->entries[(start + i) % BF_THROTTLE_ENTRIES];

		if (e->dboid == MyDatabaseId && e->loop_ref == loop_ref)
			return e;
		if (free_entry == NULL &&
			(e->dboid == InvalidOid || now - e->used_at > BF_THROTTLE_IDLE_US))
			free_entry = e;
	}
	if (free_entry == NULL)
		return NULL;			/* full: pace nothing rather than fail */
	free_entry->dboid = MyDatabaseId;
	free_entry->loop_ref = loop_ref;
	free_entry->tat = now;
	free_entry->held_until = 0;
	free_entry->used_at = now;
	return free_entry;
}

/* Show the loop as held back by a throttle until "until". */
static void
bf_throttle_hold(int64 loop_ref, TimestampTz now, TimestampTz until)
{
	BfThrottleEntry *e;

	LWLockAcquire(throttle_lock, LW_EXCLUSIVE);
	e = bf_throttle_entry(loop_ref, now);
	if (e != NULL)
	{
		e->held_until = Max(e->held_until, until);
		e->used_at = now;
	}
	LWLockRelease(throttle_lock);
}

/*
 * May an item of the loop start now (inside SPI)?  If so, the start is
 * counted against the loop's rate.  If not, *due is when to ask again.
 */
bool
bf_throttle_admit(int64 loop_ref, TimestampTz now, TimestampTz *due)
{
	BfThrottleCache *c;
	BfThrottleEntry *e;
	bool		admitted = true;

	if (throttle_state == NULL)
		return true;
	c = bf_throttle_settings(loop_ref);
	if (c->interval_us == 0 && c->max_lag_us == 0)
		return true;

	if (c->max_lag_us > 0 && bf_replication_lag(now) > c->max_lag_us)
	{
		*due = TimestampTzPlusMilliseconds(now, BF_LAG_RECHECK_MS);
		bf_throttle_hold(loop_ref, now, TimestampTzPlusMilliseconds(now, BF_HELD_SHOW_MS));
		return false;
	}
	if (c->interval_us == 0)
		return true;

	LWLockAcquire(throttle_lock, LW_EXCLUSIVE);
	e = bf_throttle_entry(loop_ref, now);
	if (e != NULL)
	{
		e->used_at = now;
		if (now >= e->tat)
			e->tat = Max(e->tat, now - (int64) c->interval_us) + (int64) c->interval_us;
		else
		{
			admitted = false;
			*due = e->tat;
			e->held_until = Max(e->held_until,
								TimestampTzPlusMilliseconds(e->tat, BF_HELD_SHOW_MS));
		}
	}
	LWLockRelease(throttle_lock);
	return admitted;
}

/* Give back an admission that did not start an item after all. */
void
bf_throttle_refund(int64 loop_ref)
{
	BfThrottleCache *c = &cache[(uint64) loop_ref % BF_THROTTLE_CACHE];
	BfThrottleEntry *e;
	TimestampTz now;

	if (throttle_state == NULL || c->loop_ref != loop_ref || c->interval_us == 0)
		return;
	now = GetCurrentTimestamp();
	LWLockAcquire(throttle_lock, LW_EXCLUSIVE);
	e = bf_throttle_entry(loop_ref, now);
	if (e != NULL)
		e->tat -= (int64) c->interval_us;
	LWLockRelease(throttle_lock);
}

/*
 * batchflow._loop_throttled(loop_ref bigint) returns boolean: was an item
 * of the loop held back by a throttle a moment ago?
 */
Datum
bf_loop_throttled(PG_FUNCTION_ARGS)
{
	int64		loop_ref = PG_GETARG_INT64(0);
	TimestampTz now = GetCurrentTimestamp();
	bool		held = false;

	if (throttle_state == NULL)
		PG_RETURN_BOOL(false);
	LWLockAcquire(throttle_lock, LW_SHARED);
	for (int i = 0; i < BF_THROTTLE_ENTRIES; i++)
	{
		BfThrottleEntry *e = &throttle_state->entries[i];

		if (e->dboid == MyDatabaseId && e->loop_ref == loop_ref)
		{
			held = e->held_until > now;
			break;
		}
	}
	LWLockRelease(throttle_lock);
	PG_RETURN_BOOL(held);
}
