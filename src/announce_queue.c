/*-------------------------------------------------------------------------
 *
 * announce_queue.c
 *	  The shared queue of NOTIFY batchflow_progress announcements: entries
 *	  reserved by committing transactions (announce.c) and sent by the
 *	  database's announcer (announcer.c).
 *
 *	  1,024 entries, linked into per-database FIFO lists, and one slot per
 *	  database for its announcer (state, pid, latch).  An entry is
 *	  reserved at pre-commit (pending), becomes ready at commit or is
 *	  cancelled at abort, is taken by a sending transaction and freed
 *	  when that transaction commits.  This file also keeps the entries the
 *	  current transaction reserved or took, and resolves them when it
 *	  ends.  The announcer's side (starting, attaching, taking a batch,
 *	  leaving) is announce_sender.c, which uses this file; this file
 *	  calls into no other part of the announcements.
 *
 *	  Invariants, and why they hold:
 *	  - Order.  Entries of a database are queued in the order their
 *	    transactions passed pre-commit, and are sent from the head, never
 *	    past an entry still pending (its transaction neither committed
 *	    nor aborted) or being sent by another process.  A transaction
 *	    that waited for another's row lock, or whose snapshot saw it
 *	    committed, passes pre-commit after it (pre-commit comes before
 *	    the commit is visible and before locks are released), so its
 *	    payloads are delivered after the other's.  This is what lets a
 *	    loop's close, which waits for a progress flush's FOR KEY SHARE
 *	    lock (progress_count.c), be its last payload.
 *	  - Nothing is lost.  An entry leaves the queue only when the
 *	    transaction that sent it commits; if it aborts, the entry is ready
 *	    again, at the same place.  An announcer that dies (it is never
 *	    restarted by the postmaster) leaves its entries ready; the next
 *	    announcing transaction of the database, or the launcher
 *	    (bf_announce_rescue), starts another.  A crash reinitialises
 *	    shared memory, and with it PostgreSQL's own notification queue.
 *	  - Within one transaction, identical payloads are sent once
 *	    (PostgreSQL's rule for NOTIFY); the announcer ends a batch before
 *	    a payload equal to one already in it, so it never merges payloads
 *	    of different transactions.  (The fallback in announce.c sends what
 *	    it takes and its own payloads in one transaction, where PostgreSQL
 *	    would merge two equal ones; payloads carry a run's counts, so two
 *	    equal ones say the same thing.)
 *
 *	  One LWLock guards the queue; everything under it is a few
 *	  assignments or a bounded copy.  A condition variable is broadcast
 *	  whenever entries are resolved (ready, cancelled, sent).
 *
 * IDENTIFICATION
 *	  src/announce_queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "announce_queue.h"

/* A start that has not attached after this long has failed. */
#define BF_ANN_START_WAIT_MS 10000

BfAnnShared *BfAnn = NULL;
LWLock	   *BfAnnLock = NULL;

/* The current transaction's entries. */
static Oid	txn_dboid = InvalidOid;
static int	txn_nreserved = 0;
static int32 txn_reserved[BF_ANN_ENTRIES];
static int	txn_ntaken = 0;
static int32 txn_taken[BF_ANN_ENTRIES];

static int	bf_ann_take_before(BfAnnDb *db, uint64 before, char **queued);
static void bf_ann_append(BfAnnDb *db, int32 e);

/* Size of the shared queue. */
static Size
bf_ann_shmem_size(void)
{
	return MAXALIGN(sizeof(BfAnnShared));
}

/* Reserve the queue and its LWLock (from the shmem_request_hook). */
void
bf_announce_shmem_request(void)
{
	RequestAddinShmemSpace(bf_ann_shmem_size());
	RequestNamedLWLockTranche("batchflow announcements", 1);
}

/* Create or attach to the queue (from the shmem_startup_hook). */
void
bf_announce_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BfAnn = ShmemInitStruct("batchflow announcements", bf_ann_shmem_size(), &found);
	if (!found)
	{
		memset(BfAnn, 0, bf_ann_shmem_size());
		ConditionVariableInit(&BfAnn->resolved);
		for (int i = 0; i < BF_ANN_ENTRIES; i++)
			BfAnn->entries[i].next = (i + 1 < BF_ANN_ENTRIES) ? i + 1 : -1;
		BfAnn->free_head = 0;
		BfAnn->nfree = BF_ANN_ENTRIES;
		for (int d = 0; d < BF_ANN_DBS; d++)
			BfAnn->dbs[d].head = BfAnn->dbs[d].tail = -1;
	}
	BfAnnLock = &(GetNamedLWLockTranche("batchflow announcements"))->lock;
	LWLockRelease(AddinShmemInitLock);
}

/* Is the shared queue there (batchflow preloaded)? */
bool
bf_annq_exists(void)
{
	return BfAnn != NULL;
}

/* Pre-commit: what this transaction reserves or takes is of its database. */
void
bf_annq_txn_begin(void)
{
	txn_dboid = MyDatabaseId;
}

/*
 * Is an entry of this database reserved before now pending or being
 * sent?  *before: the sequence number that "now" is.
 */
bool
bf_annq_busy(uint64 *before)
{
	BfAnnDb    *db;
	bool		busy;

	LWLockAcquire(BfAnnLock, LW_SHARED);
	*before = BfAnn->next_seq;
	db = bf_ann_db(MyDatabaseId, false, 0);
	busy = (db != NULL && bf_ann_queue_busy(db, *before));
	LWLockRelease(BfAnnLock);
	return busy;
}

/*
 * Unless an entry of this database reserved before "before" is pending
 * or being sent (then false), take those entries into this transaction;
 * queued[] points at the text of the *nqueued to notify.
 */
bool
bf_annq_take_if_idle(uint64 before, char **queued, int *nqueued)
{
	BfAnnDb    *db;

	*nqueued = 0;
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(MyDatabaseId, false, 0);
	if (db != NULL && bf_ann_queue_busy(db, before))
	{
		LWLockRelease(BfAnnLock);
		return false;
	}
	if (db != NULL)
		*nqueued = bf_ann_take_before(db, before, queued);
	LWLockRelease(BfAnnLock);
	return true;
}

/*
 * Wait until no entry of this database reserved before now is pending or
 * being sent, then take those entries into this transaction; queued[]
 * points at the text of those to notify.  Returns how many.
 */
int
bf_annq_take_when_idle(char **queued)
{
	BfAnnDb    *db;
	int			nqueued = 0;
	uint64		before;

	LWLockAcquire(BfAnnLock, LW_SHARED);
	before = BfAnn->next_seq;
	LWLockRelease(BfAnnLock);

	ConditionVariablePrepareToSleep(&BfAnn->resolved);
	for (;;)
	{
		LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
		db = bf_ann_db(MyDatabaseId, false, 0);
		if (db == NULL || !bf_ann_queue_busy(db, before))
			break;
		LWLockRelease(BfAnnLock);
		ConditionVariableSleep(&BfAnn->resolved, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	if (db != NULL)
		nqueued = bf_ann_take_before(db, before, queued);
	LWLockRelease(BfAnnLock);
	return nqueued;
}

/*
 * Reserve one entry per payload (texts[], n of them, each shorter than
 * BF_ANN_PAYLOAD if fits) in this database's queue if its announcer
 * runs and there is room.  Otherwise false, and *start: the caller is to
 * start the announcer (served: the database may have one).
 */
bool
bf_annq_reserve(char **texts, int n, bool served, bool fits,
				TimestampTz now, bool *start)
{
	BfAnnDb    *db;

	*start = false;
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(MyDatabaseId, served, now);
	if (db != NULL && db->sender == BF_SENDER_RUNNING && fits &&
		BfAnn->nfree >= n)
	{
		for (int i = 0; i < n; i++)
		{
			int32		e = BfAnn->free_head;
			BfAnnEntry *entry = &BfAnn->entries[e];

			BfAnn->free_head = entry->next;
			BfAnn->nfree--;
			entry->seq = BfAnn->next_seq++;
			entry->state = BF_ANN_PENDING;
			entry->cancelled = false;
			entry->len = strlen(texts[i]);
			memcpy(entry->payload, texts[i], entry->len + 1);
			bf_ann_append(db, e);
			txn_reserved[txn_nreserved++] = e;
		}
		LWLockRelease(BfAnnLock);
		return true;
	}
	if (served && db != NULL && bf_ann_start_due(db, now))
	{
		db->sender = BF_SENDER_STARTING;
		db->starting_since = now;
		*start = true;
	}
	LWLockRelease(BfAnnLock);
	return false;
}

/* Forget the transaction's entries (resolved by commit or abort). */
void
bf_annq_txn_end(void)
{
	txn_nreserved = 0;
	txn_ntaken = 0;
}

/*
 * Take into this transaction the entries at the head of the queue that
 * were reserved before "before" (all ready); queued[] points at the text
 * of those to notify.  Locked.
 */
static int
bf_ann_take_before(BfAnnDb *db, uint64 before, char **queued)
{
	int			nqueued = 0;

	for (int32 e = db->head; e >= 0 && BfAnn->entries[e].seq < before;
		 e = BfAnn->entries[e].next)
	{
		BfAnnEntry *entry = &BfAnn->entries[e];

		entry->state = BF_ANN_SENDING;
		txn_taken[txn_ntaken++] = e;
		if (!entry->cancelled)
			queued[nqueued++] = entry->payload;
	}
	return nqueued;
}

/* Commit: reserved entries become ready, taken ones are gone. */
void
bf_annq_commit(void)
{
	BfAnnDb    *db;
	Latch	   *wake = NULL;
	TimestampTz now;

	if (txn_nreserved == 0 && txn_ntaken == 0)
		return;
	now = GetCurrentTimestamp();
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(txn_dboid, false, 0);
	if (db == NULL)
	{
		/* Cannot happen: queued entries keep their database's slot. */
		LWLockRelease(BfAnnLock);
		return;
	}
	for (int i = 0; i < txn_nreserved; i++)
		BfAnn->entries[txn_reserved[i]].state = BF_ANN_READY;
	for (int i = 0; i < txn_ntaken; i++)
	{
		Assert(db->head == txn_taken[i]);
		bf_ann_pop(db);
	}
	if (db->sender == BF_SENDER_RUNNING || db->sender == BF_SENDER_LEAVING)
		wake = db->sender_latch;
	if (db->sender_pid == MyProcPid)
		wake = NULL;
	bf_ann_db_forget_if_idle(db, now);
	LWLockRelease(BfAnnLock);
	ConditionVariableBroadcast(&BfAnn->resolved);
	if (wake != NULL && txn_nreserved > 0)
		SetLatch(wake);
}

/* Abort: reserved entries are cancelled, taken ones ready again. */
void
bf_annq_abort(void)
{
	BfAnnDb    *db;
	Latch	   *wake = NULL;

	if (txn_nreserved == 0 && txn_ntaken == 0)
		return;
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(txn_dboid, false, 0);
	for (int i = 0; i < txn_nreserved; i++)
	{
		BfAnn->entries[txn_reserved[i]].cancelled = true;
		BfAnn->entries[txn_reserved[i]].state = BF_ANN_READY;
	}
	for (int i = 0; i < txn_ntaken; i++)
		BfAnn->entries[txn_taken[i]].state = BF_ANN_READY;
	if (db != NULL && db->sender_pid != MyProcPid &&
		(db->sender == BF_SENDER_RUNNING || db->sender == BF_SENDER_LEAVING))
		wake = db->sender_latch;
	LWLockRelease(BfAnnLock);
	ConditionVariableBroadcast(&BfAnn->resolved);
	if (wake != NULL)
		SetLatch(wake);
}

/*
 * The slot of a database; with add, a new one if there is room: an
 * unused slot, or one that nothing keeps any more (no entry, no
 * announcer, no start held off at "now"; left so by a database that was
 * dropped).  Locked.
 */
BfAnnDb *
bf_ann_db(Oid dboid, bool add, TimestampTz now)
{
	BfAnnDb    *unused = NULL;

	for (int d = 0; d < BF_ANN_DBS; d++)
	{
		BfAnnDb    *db = &BfAnn->dbs[d];

		if (db->dboid == dboid)
			return db;
		if (unused == NULL &&
			(db->dboid == InvalidOid ||
			 (db->nqueued == 0 && db->sender == BF_SENDER_NONE &&
			  db->no_start_until <= now)))
			unused = db;
	}
	if (!add || unused == NULL)
		return NULL;
	memset(unused, 0, sizeof(BfAnnDb));
	unused->dboid = dboid;
	unused->head = unused->tail = -1;
	return unused;
}

/* Free a database's slot when nothing keeps it.  Locked. */
void
bf_ann_db_forget_if_idle(BfAnnDb *db, TimestampTz now)
{
	if (db->nqueued == 0 && db->sender == BF_SENDER_NONE &&
		db->no_start_until <= now)
		db->dboid = InvalidOid;
}

/* May an announcer be started for this database now?  Locked. */
bool
bf_ann_start_due(BfAnnDb *db, TimestampTz now)
{
	if (db->no_start_until > now)
		return false;
	if (db->sender == BF_SENDER_NONE)
		return true;
	/* A start that never attached (no slot, database gone): again. */
	if (db->sender == BF_SENDER_STARTING &&
		TimestampDifferenceExceeds(db->starting_since, now, BF_ANN_START_WAIT_MS))
	{
		db->failed_starts++;
		return true;
	}
	return false;
}

/*
 * Is an entry of the queue reserved before sequence number "before"
 * pending or being sent?  Locked.
 */
bool
bf_ann_queue_busy(BfAnnDb *db, uint64 before)
{
	for (int32 e = db->head; e >= 0 && BfAnn->entries[e].seq < before;
		 e = BfAnn->entries[e].next)
		if (BfAnn->entries[e].state != BF_ANN_READY)
			return true;
	return false;
}

/* Append an entry to a database's queue.  Locked. */
static void
bf_ann_append(BfAnnDb *db, int32 e)
{
	BfAnn->entries[e].next = -1;
	if (db->tail >= 0)
		BfAnn->entries[db->tail].next = e;
	else
		db->head = e;
	db->tail = e;
	db->nqueued++;
}

/* Remove the head of a database's queue and free it.  Locked. */
void
bf_ann_pop(BfAnnDb *db)
{
	int32		e = db->head;
	BfAnnEntry *entry = &BfAnn->entries[e];

	db->head = entry->next;
	if (db->head < 0)
		db->tail = -1;
	db->nqueued--;
	entry->state = BF_ANN_FREE;
	entry->next = BfAnn->free_head;
	BfAnn->free_head = e;
	BfAnn->nfree++;
}

/* The current transaction's taken entries are ready again.  Locked. */
void
bf_ann_taken_ready(void)
{
	for (int i = 0; i < txn_ntaken; i++)
		BfAnn->entries[txn_taken[i]].state = BF_ANN_READY;
}

/* The current transaction takes entry e to send it.  Locked. */
void
bf_ann_took(int32 e)
{
	txn_taken[txn_ntaken++] = e;
}
