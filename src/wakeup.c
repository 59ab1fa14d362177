/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  The idle list of item workers, and waking only as many of them as
 *	  new work can use.
 *
 *	  A worker that found nothing to claim puts itself on the idle list
 *	  (its slot, its database, its latch) before it sleeps.  A transaction
 *	  that commits new work wakes only as many idle workers of its database
 *	  as that work can use: for each loop it created (bf_start, a run
 *	  reaching its next node; counted by the trigger loop_wake), min(items,
 *	  cap), one for a sequential loop.  So a one-item run wakes one worker
 *	  instead of the whole pool.  Work announced without a new loop
 *	  (batchflow._wake_on_commit() alone) wakes one "lead", which claims an
 *	  item and then wakes as many more idle workers ("helpers") as that
 *	  loop can still use.  A wake-all remains for the launcher, bf_retry
 *	  and bf_cancel.
 *
 *	  No wake-up is lost between a worker's look and its sleep.  Every
 *	  waker first increments the work generation (a full barrier), then
 *	  takes the list's spinlock and pops entries.  A worker reads the
 *	  generation before the snapshot of its look, and after finding
 *	  nothing it pushes itself under the same spinlock, issues a barrier
 *	  and reads the generation again: if it moved, it leaves the list and
 *	  looks again at once.  Either the worker sees the increment, or the
 *	  waker's pop comes after the push and finds the worker on the list;
 *	  and work committed before the first read is visible to the look.
 *	  The latch covers a wake-up that arrives between the push and the
 *	  sleep.  test/t/095_lost_wakeup.pl holds a worker in that window.
 *
 *	  A worker woken by its poll timeout, when the generation has not
 *	  moved and its last look saw no loop with work left (claim.c), does
 *	  not start a transaction to find nothing: it goes back to sleep,
 *	  looking anyway every BF_QUIET_LOOK_EVERY polls as a safety net.
 *	  A latch set by PostgreSQL itself (a shared invalidation catch-up
 *	  signal, a barrier), with no waker and the generation unmoved, is
 *	  not a wake-up either: the worker serves the signal without a look
 *	  and sleeps out the rest of its poll.
 *
 *	  Nothing here is durable: after a crash the list starts empty and
 *	  every worker's first step is a look.
 *
 * IDENTIFICATION
 *	  src/wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "executor/spi.h"
#include "utils/guc.h"

#include "batchflow.h"
#include "activity_http.h"
#include "claim.h"
#include "loopcache.h"
#include "pool.h"
#include "wakeup.h"

typedef struct BfIdleEntry
{
	int			slotno;
	Oid			dboid;
	Latch	   *latch;
} BfIdleEntry;

typedef struct BfWakeState
{
	pg_atomic_uint64 generation;	/* bumped by every waker before it pops */
	pg_atomic_uint32 nidle;		/* entries in the list, to peek without the lock */
	slock_t		mutex;			/* protects n, entries and reasons */
	int			nslots;
	int			n;				/* entries[0..n-1]: oldest idle first */
	BfIdleEntry *entries;		/* nslots of them */
	uint8	   *reasons;		/* per slot: BfWakeReason of the last pop */
} BfWakeState;

static BfWakeState *WakeState = NULL;

/* This worker's slot and latch (bf_idle_attach); -1 outside item workers. */
static int	my_slotno = -1;
static Latch *my_latch = NULL;

/* Why this worker was last woken, until its next look ends. */
static BfWakeReason my_reason = BF_WAKE_NONE;

/* Timeout wake-ups in a row that skipped their look. */
static int	quiet_polls = 0;

/* Every this many quiet polls, look anyway (the safety net). */
#define BF_QUIET_LOOK_EVERY 10

int			bf_debug_idle_delay_ms = 0;

static int	bf_idle_pop(BfWakeReason reason, int max, Latch **latches);
static void bf_idle_remove_at(int pos);
static void bf_idle_detach(int code, Datum arg);

/* Bytes of shared memory for the idle list. */
Size
bf_wakeup_shmem_size(void)
{
	Size		sz = MAXALIGN(sizeof(BfWakeState));

	sz = add_size(sz, MAXALIGN(mul_size(bf_max_workers, sizeof(BfIdleEntry))));
	sz = add_size(sz, MAXALIGN(mul_size(bf_max_workers, sizeof(uint8))));
	return sz;
}

/* Create or attach to the idle list (from the shmem_startup_hook). */
void
bf_wakeup_shmem_startup(void)
{
	bool		found;
	char	   *base;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	base = ShmemInitStruct("batchflow idle list", bf_wakeup_shmem_size(), &found);
	WakeState = (BfWakeState *) base;
	if (!found)
	{
		memset(base, 0, bf_wakeup_shmem_size());
		pg_atomic_init_u64(&WakeState->generation, 0);
		pg_atomic_init_u32(&WakeState->nidle, 0);
		SpinLockInit(&WakeState->mutex);
		WakeState->nslots = bf_max_workers;
	}
	/* Pointers are per process (same address in every backend, but say so). */
	WakeState->entries = (BfIdleEntry *) (base + MAXALIGN(sizeof(BfWakeState)));
	WakeState->reasons = (uint8 *) ((char *) WakeState->entries +
									MAXALIGN(mul_size(WakeState->nslots, sizeof(BfIdleEntry))));
	LWLockRelease(AddinShmemInitLock);
}

/* Declare batchflow.debug_idle_delay (any backend). */
void
bf_wakeup_define_gucs(void)
{
	DefineCustomIntVariable("batchflow.debug_idle_delay",
							"For tests: pause of an item worker between finding nothing to claim and going idle.",
							"Holds the worker in the window where a wake-up could be lost; 0 (the default) in production.",
							&bf_debug_idle_delay_ms,
							0, 0, 60000,
							PGC_SIGHUP,
							GUC_UNIT_MS | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
}

/* The work generation: read it before a look's snapshot. */
uint64
bf_work_generation(void)
{
	if (WakeState == NULL)
		return 0;
	return pg_atomic_read_u64(&WakeState->generation);
}

/* Remove entries[pos], keeping the order (under the mutex). */
static void
bf_idle_remove_at(int pos)
{
	memmove(&WakeState->entries[pos], &WakeState->entries[pos + 1],
			sizeof(BfIdleEntry) * (WakeState->n - pos - 1));
	WakeState->n--;
	pg_atomic_write_u32(&WakeState->nidle, (uint32) WakeState->n);
}

/*
 * Pop up to max idle workers of this database, the longest idle first
 * (the kernel's scheduler runs a process that slept long soonest after its
 * wake-up), marking them with reason; their latches go to *latches.
 * Returns how many.  The caller sets the latches after this returns.
 */
static int
bf_idle_pop(BfWakeReason reason, int max, Latch **latches)
{
	int			got = 0;

	if (max <= 0 || pg_atomic_read_u32(&WakeState->nidle) == 0)
		return 0;
	SpinLockAcquire(&WakeState->mutex);
	for (int i = 0; i < WakeState->n && got < max;)
	{
		BfIdleEntry *e = &WakeState->entries[i];

		if (e->dboid != MyDatabaseId)
		{
			i++;
			continue;
		}
		latches[got++] = e->latch;
		WakeState->reasons[e->slotno] = (uint8) reason;
		bf_idle_remove_at(i);
	}
	SpinLockRelease(&WakeState->mutex);
	return got;
}

/*
 * New work committed (called after the commit, so it is visible): bump the
 * generation, then wake up to n idle workers of this database.  Leads
 * (BF_WAKE_LEAD) wake helpers once they have claimed; workers woken for a
 * known number of items (BF_WAKE_DIRECT) do not.
 */
void
bf_wake_idle(int n, BfWakeReason reason)
{
	Latch	   *latches[BF_MAX_MAX_WORKERS];
	int			got;

	if (WakeState == NULL)
		return;
	pg_atomic_fetch_add_u64(&WakeState->generation, 1);
	got = bf_idle_pop(reason, Min(n, BF_MAX_MAX_WORKERS), latches);
	for (int i = 0; i < got; i++)
		SetLatch(latches[i]);
}

/* Wake every idle worker of this database (launcher, bf_retry, bf_cancel). */
void
bf_wake_all_idle(void)
{
	Latch	   *latches[BF_MAX_MAX_WORKERS];
	int			n;

	if (WakeState == NULL)
		return;
	pg_atomic_fetch_add_u64(&WakeState->generation, 1);
	n = bf_idle_pop(BF_WAKE_ALL, BF_MAX_MAX_WORKERS, latches);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/*
 * A lead found work that nworkers more workers can use: wake that many
 * idle workers (no generation bump: the work was visible to the lead, so
 * it is to anyone who looks after it).
 */
void
bf_wake_helpers(int nworkers)
{
	Latch	   *latches[BF_MAX_MAX_WORKERS];
	int			n;

	if (WakeState == NULL)
		return;
	n = bf_idle_pop(BF_WAKE_HELPER, Min(nworkers, BF_MAX_MAX_WORKERS), latches);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/* Idle workers of all databases right now (a hint, read without the lock). */
int
bf_idle_count(void)
{
	return WakeState ? (int) pg_atomic_read_u32(&WakeState->nidle) : 0;
}

/* An item worker says which slot and latch are its own. */
void
bf_idle_attach(int slotno, Latch *latch)
{
	if (WakeState == NULL || slotno < 0 || slotno >= WakeState->nslots)
		elog(ERROR, "batchflow worker slot %d has no idle-list entry", slotno);
	my_slotno = slotno;
	my_latch = latch;
	before_shmem_exit(bf_idle_detach, (Datum) 0);
}

/*
 * About to sleep after a look that found nothing; looked_at_gen is the
 * generation read before that look's snapshot.  Puts this worker on the
 * idle list and returns true if it may sleep; returns false (and leaves
 * the list) if new work committed since, so the caller must look again.
 */
bool
bf_idle_enter(uint64 looked_at_gen)
{
	bool		listed = false;

	Assert(my_slotno >= 0);
	SpinLockAcquire(&WakeState->mutex);
	for (int i = 0; i < WakeState->n; i++)
		if (WakeState->entries[i].slotno == my_slotno)
			listed = true;
	if (!listed)
	{
		BfIdleEntry *e = &WakeState->entries[WakeState->n++];

		e->slotno = my_slotno;
		e->dboid = MyDatabaseId;
		e->latch = my_latch;
		pg_atomic_write_u32(&WakeState->nidle, (uint32) WakeState->n);
	}
	WakeState->reasons[my_slotno] = BF_WAKE_NONE;
	SpinLockRelease(&WakeState->mutex);

	pg_memory_barrier();
	if (pg_atomic_read_u64(&WakeState->generation) == looked_at_gen)
		return true;
	(void) bf_idle_leave();
	return false;
}

/*
 * After the sleep: leave the idle list if still on it, and say why the
 * worker was woken (BF_WAKE_NONE if nobody popped it).
 */
BfWakeReason
bf_idle_leave(void)
{
	BfWakeReason reason;

	Assert(my_slotno >= 0);
	SpinLockAcquire(&WakeState->mutex);
	for (int i = 0; i < WakeState->n; i++)
	{
		if (WakeState->entries[i].slotno == my_slotno)
		{
			bf_idle_remove_at(i);
			break;
		}
	}
	reason = (BfWakeReason) WakeState->reasons[my_slotno];
	WakeState->reasons[my_slotno] = BF_WAKE_NONE;
	SpinLockRelease(&WakeState->mutex);
	my_reason = reason;
	return reason;
}

/* Leave the idle list when the process exits (a stale entry would eat a wake-up). */
static void
bf_idle_detach(int code, Datum arg)
{
	if (WakeState != NULL && my_slotno >= 0)
		(void) bf_idle_leave();
	my_slotno = -1;
}

/*
 * A lead just claimed an item of a parallel loop: wake as many idle
 * workers as the loop can still use, min(its other slots, the items after
 * this one), counted in workers (an HTTP worker takes up to
 * batchflow.http_max_inflight items).  Helpers and busy workers wake no
 * one: the lead's count already covers the loop.
 */
void
bf_idle_claimed(const BfClaim *claim)
{
	const BfLoopInfo *loop = claim->loop;
	int			items;
	int			workers;

	if (my_reason != BF_WAKE_LEAD)
		return;
	my_reason = BF_WAKE_NONE;
	if (loop->sequential || loop->is_activity || bf_idle_count() == 0)
		return;
	items = Min(loop->concurrency - 1, loop->total - claim->idx - 1);
	if (items <= 0)
		return;
	workers = loop->has_http ? (items + bf_http_max_inflight - 1) / Max(bf_http_max_inflight, 1) : items;
	bf_wake_helpers(workers);
}

/* A look ended: whatever woke this worker has been acted on. */
void
bf_idle_step_done(void)
{
	my_reason = BF_WAKE_NONE;
}

/*
 * After a sleep that ended with WaitLatch's result rc: may the worker go
 * back to sleep without a look?  Only after a plain timeout (no latch, no
 * waker), with the generation where it was at the last look, when that
 * look saw no loop with work left, and not every BF_QUIET_LOOK_EVERY-th
 * time.
 */
bool
bf_idle_may_skip_look(int rc, uint64 looked_at_gen)
{
	if ((rc & WL_LATCH_SET) || !(rc & WL_TIMEOUT) || my_reason != BF_WAKE_NONE ||
		bf_claim_saw_work || bf_work_generation() != looked_at_gen ||
		++quiet_polls % BF_QUIET_LOOK_EVERY == 0)
	{
		quiet_polls = 0;
		return false;
	}
	return true;
}

/*
 * After a sleep that ended with WaitLatch's result rc: was the latch set
 * by something other than batchflow's wake-ups?  PostgreSQL's own signals
 * set it too (a shared invalidation catch-up, which the sinval queue
 * passes from one lagging backend to the next, or a barrier): with no
 * waker, and the generation where it was at the last look, there is no
 * new committed work, so the worker must not look (an uncommitted bf_start
 * wakes no one).
 */
bool
bf_idle_latch_is_foreign(int rc, uint64 looked_at_gen)
{
	return (rc & WL_LATCH_SET) && my_reason == BF_WAKE_NONE &&
		bf_work_generation() == looked_at_gen;
}

PG_FUNCTION_INFO_V1(bf_sql_loop_wake);

/*
 * Trigger loop_wake, AFTER INSERT ON batchflow.loop FOR EACH ROW: a new
 * open loop needs min(total, concurrency) workers (one if sequential);
 * ask for that many at commit.  Reads only the new row.
 */
Datum
bf_sql_loop_wake(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	bool		isnull;
	bool		sequential;
	int32		total;
	int32		cap;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		elog(ERROR, "batchflow._loop_wake must be an AFTER INSERT row trigger");
	desc = td->tg_relation->rd_att;
	tup = td->tg_trigtuple;

	(void) heap_getattr(tup, SPI_fnumber(desc, "finished_at"), desc, &isnull);
	if (!isnull)
		return PointerGetDatum(NULL);	/* an empty loop, closed at once */
	total = DatumGetInt32(heap_getattr(tup, SPI_fnumber(desc, "total"), desc, &isnull));
	cap = DatumGetInt32(heap_getattr(tup, SPI_fnumber(desc, "concurrency"), desc, &isnull));
	sequential = DatumGetBool(heap_getattr(tup, SPI_fnumber(desc, "sequential"), desc, &isnull));
	bf_wake_workers_on_commit(sequential ? 1 : Max(1, Min(total, cap)));
	return PointerGetDatum(NULL);
}
