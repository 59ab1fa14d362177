/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  The idle list of item workers, and waking only as many of them as
 *	  new work can use.
 *
 *	  A worker that found nothing to claim puts itself on the idle list
 *	  (its slot, its database, its latch) before it sleeps; wakers take the
 *	  most recently idle first.  A transaction
 *	  that commits new work wakes only as many idle workers of its database
 *	  as that work can use: for each loop it created (bf_start, a run
 *	  reaching its next node; counted by the trigger loop_wake of
 *	  wake_commit.c), min(items, cap), one for a sequential loop.  So a one-item run wakes one worker
 *	  instead of the whole pool.  Work announced without a new loop
 *	  (batchflow._wake_on_commit() alone) wakes one "lead", which claims an
 *	  item and then wakes as many more idle workers ("helpers") as that
 *	  loop can still use.  A wake-all remains for the launcher, bf_retry
 *	  and bf_cancel.
 *
 *	  The list: one entry per worker slot, linked oldest idle first
 *	  (prev/next slot numbers; pops walk it from the tail), under one LWLock of its own ("batchflow
 *	  idle list").  Going idle and leaving are O(1) (a slot knows whether
 *	  it is listed, and unlinks itself); a pop walks the list for entries
 *	  of its database, so it takes the LWLock, not a spinlock: a waker may
 *	  hold it for up to max_workers steps, and a spinlock section must be
 *	  a few straight-line instructions.  No latch is set and no clock read
 *	  under the lock: a pop copies the latches out and sets them after.
 *
 *	  No wake-up is lost between a worker's look and its sleep.  Every
 *	  waker first increments the work generation (a full barrier), then
 *	  takes the list's lock and pops entries.  A worker reads the
 *	  generation before the snapshot of its look, and after finding
 *	  nothing it pushes itself under the same lock, issues a barrier
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

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "batchflow.h"
#include "activity_http.h"
#include "claim.h"
#include "loopcache.h"
#include "wakeup.h"

/*
 * Did the last bf_claim_next_item see a loop with work left (items
 * pending or executing, every cap lock held, a retry backing off)?  If
 * not, only new work can give this worker something to do.  Set by
 * claim.c (and worker.c), read by bf_idle_may_skip_look.
 */
bool		bf_claim_saw_work = true;

/* A worker slot's place on the idle list. */
typedef struct BfIdleSlot
{
	bool		listed;			/* on the list now */
	uint8		reason;			/* BfWakeReason of the last pop */
	int			prev;			/* older neighbour's slot, -1: none */
	int			next;			/* younger neighbour's slot, -1: none */
	Oid			dboid;			/* the worker's database */
	Latch	   *latch;
} BfIdleSlot;

typedef struct BfWakeState
{
	pg_atomic_uint64 generation;	/* bumped by every waker before it pops */
	pg_atomic_uint32 nidle;		/* entries listed, to peek without the lock */
	int			nslots;
	int			head;			/* oldest idle slot, -1: list empty */
	int			tail;			/* youngest idle slot, -1: list empty */
	BfIdleSlot	slots[FLEXIBLE_ARRAY_MEMBER];	/* all under idle_lock */
} BfWakeState;

static BfWakeState *WakeState = NULL;

/* The idle list's LWLock (the tranche "batchflow idle list"). */
static LWLock *idle_lock = NULL;

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
static void bf_idle_push(int slotno);
static void bf_idle_unlink(int slotno);
static void bf_idle_detach(int code, Datum arg);

/* Bytes of shared memory for the idle list. */
static Size
bf_wakeup_shmem_size(void)
{
	return add_size(offsetof(BfWakeState, slots),
					mul_size(bf_max_workers, sizeof(BfIdleSlot)));
}

/* Reserve the idle list and its LWLock (from the shmem_request_hook). */
void
bf_wakeup_shmem_request(void)
{
	RequestAddinShmemSpace(bf_wakeup_shmem_size());
	RequestNamedLWLockTranche("batchflow idle list", 1);
}

/* Create or attach to the idle list (from the shmem_startup_hook). */
void
bf_wakeup_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	WakeState = ShmemInitStruct("batchflow idle list", bf_wakeup_shmem_size(), &found);
	if (!found)
	{
		memset(WakeState, 0, bf_wakeup_shmem_size());
		pg_atomic_init_u64(&WakeState->generation, 0);
		pg_atomic_init_u32(&WakeState->nidle, 0);
		WakeState->nslots = bf_max_workers;
		WakeState->head = WakeState->tail = -1;
		for (int i = 0; i < WakeState->nslots; i++)
			WakeState->slots[i].prev = WakeState->slots[i].next = -1;
	}
	idle_lock = &(GetNamedLWLockTranche("batchflow idle list"))->lock;
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

/* Append slotno to the list as its youngest entry (idle_lock held). */
static void
bf_idle_push(int slotno)
{
	BfIdleSlot *e = &WakeState->slots[slotno];

	e->listed = true;
	e->prev = WakeState->tail;
	e->next = -1;
	if (WakeState->tail >= 0)
		WakeState->slots[WakeState->tail].next = slotno;
	else
		WakeState->head = slotno;
	WakeState->tail = slotno;
	pg_atomic_add_fetch_u32(&WakeState->nidle, 1);
}

/* Take slotno off the list, keeping the others' order (idle_lock held). */
static void
bf_idle_unlink(int slotno)
{
	BfIdleSlot *e = &WakeState->slots[slotno];

	if (e->prev >= 0)
		WakeState->slots[e->prev].next = e->next;
	else
		WakeState->head = e->next;
	if (e->next >= 0)
		WakeState->slots[e->next].prev = e->prev;
	else
		WakeState->tail = e->prev;
	e->listed = false;
	e->prev = e->next = -1;
	pg_atomic_sub_fetch_u32(&WakeState->nidle, 1);
}

/*
 * Pop up to max idle workers of this database, the most recently idle
 * first (its caches are warm, and its once-a-while lookups, such as the
 * list of loops to fill, are still fresh: it starts the item soonest),
 * marking them with reason; their latches go to *latches.  Returns how
 * many.  The caller sets the latches after this returns.
 */
static int
bf_idle_pop(BfWakeReason reason, int max, Latch **latches)
{
	int			got = 0;
	int			prev;

	if (max <= 0 || pg_atomic_read_u32(&WakeState->nidle) == 0)
		return 0;
	LWLockAcquire(idle_lock, LW_EXCLUSIVE);
	for (int s = WakeState->tail; s >= 0 && got < max; s = prev)
	{
		BfIdleSlot *e = &WakeState->slots[s];

		prev = e->prev;
		if (e->dboid != MyDatabaseId)
			continue;
		latches[got++] = e->latch;
		e->reason = (uint8) reason;
		bf_idle_unlink(s);
	}
	LWLockRelease(idle_lock);
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
	BfIdleSlot *e;

	Assert(my_slotno >= 0);
	e = &WakeState->slots[my_slotno];
	LWLockAcquire(idle_lock, LW_EXCLUSIVE);
	if (!e->listed)
	{
		e->dboid = MyDatabaseId;
		e->latch = my_latch;
		bf_idle_push(my_slotno);
	}
	e->reason = BF_WAKE_NONE;
	LWLockRelease(idle_lock);

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
	BfIdleSlot *e;
	BfWakeReason reason;

	Assert(my_slotno >= 0);
	e = &WakeState->slots[my_slotno];
	LWLockAcquire(idle_lock, LW_EXCLUSIVE);
	if (e->listed)
		bf_idle_unlink(my_slotno);
	reason = (BfWakeReason) e->reason;
	e->reason = BF_WAKE_NONE;
	LWLockRelease(idle_lock);
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
