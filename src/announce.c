/*-------------------------------------------------------------------------
 *
 * announce.c
 *	  NOTIFY batchflow_progress, sent after the commit by one process per
 *	  database instead of by the transaction that made the change.
 *
 *	  A transaction that calls NOTIFY takes PostgreSQL's notify lock (one
 *	  for the whole cluster) just before its commit record and holds it
 *	  until the commit is flushed, so every notifying commit waits for the
 *	  previous one: bf_start, loop closes and progress flushes all
 *	  announce, and they went one at a time.  Here, such a transaction
 *	  only computes its payloads (batchflow._announce, from the progress
 *	  triggers and progress_count.c).  At pre-commit, if the notify lock
 *	  is free (no other commit is notifying) and nothing of its database
 *	  is pending in the queue below, it takes the lock without waiting and
 *	  notifies itself, as before: no delay, no extra transaction.
 *	  Otherwise it reserves one entry per payload in a shared queue of its
 *	  database; at commit the entries become ready, at abort they are
 *	  cancelled.  The database's announcer (announcer.c) sends the ready
 *	  entries in one short transaction of its own: many NOTIFYs, one
 *	  commit (asynchronous: a notification survives no crash anyway), one
 *	  hold of the notify lock.
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
 *	  - A rolled-back transaction announces nothing: payloads are kept
 *	    per subtransaction level and dropped with it; entries are reserved
 *	    only at pre-commit and cancelled at abort.
 *	  - Within one transaction, identical payloads are sent once
 *	    (PostgreSQL's rule for NOTIFY); the announcer ends a batch before
 *	    a payload equal to one already in it, so it never merges payloads
 *	    of different transactions.  (The fallback below sends what it
 *	    takes and its own payloads in one transaction, where PostgreSQL
 *	    would merge two equal ones; payloads carry a run's counts, so two
 *	    equal ones say the same thing.)
 *	  - The uncontended path takes, like the fallback below, the ready
 *	    entries reserved before it ahead of its own payloads; it gives up
 *	    (and queues) if any of them is pending or being sent, and it only
 *	    tries the notify lock, so it never waits while holding it.
 *	  - The fallback.  When the database has no running announcer (not
 *	    started yet, leaving, not served by the pool, batchflow not
 *	    preloaded), the queue is full, or a payload is too long for an
 *	    entry, the transaction notifies itself at pre-commit, as before;
 *	    it first waits until no entry of its database is pending or being
 *	    sent (those transactions are committing) and takes the ready ones
 *	    into its own transaction ahead of its payloads, so the order above
 *	    holds across both paths.  Waiters hold no notify lock (pre-commit
 *	    callbacks run before PostgreSQL takes it), so the wait ends.
 *	  - PREPARE TRANSACTION is refused for a transaction that announced,
 *	    as for any NOTIFY: its payloads are handed to PostgreSQL at
 *	    pre-prepare, which then refuses.
 *
 *	  One LWLock guards the queue; everything under it is a few
 *	  assignments or a bounded copy.  A condition variable is broadcast
 *	  whenever entries are resolved (ready, cancelled, sent).
 *
 * IDENTIFICATION
 *	  src/announce.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "announce.h"
#include "db_served.h"

/* Sizes of the shared queue. */
#define BF_ANN_ENTRIES 1024
#define BF_ANN_PAYLOAD 496		/* longer payloads take the fallback */
#define BF_ANN_DBS 32

/* After a failed start, or DROP DATABASE, no announcer for this long. */
#define BF_ANN_RETRY_MS 10000
/* A start that has not attached after this long has failed. */
#define BF_ANN_START_WAIT_MS 10000
/* PostgreSQL's limit on a NOTIFY payload (private to async.c). */
#define BF_NOTIFY_PAYLOAD_MAX (BLCKSZ - NAMEDATALEN - 128)
/* Failed starts in a row after which orphan entries are dropped. */
#define BF_ANN_MAX_FAILED_STARTS 3

typedef enum BfAnnState
{
	BF_ANN_FREE = 0,
	BF_ANN_PENDING,				/* reserved; its transaction is committing */
	BF_ANN_READY,				/* to send (or to drop, if cancelled) */
	BF_ANN_SENDING				/* in a sending transaction not ended yet */
} BfAnnState;

typedef enum BfSenderState
{
	BF_SENDER_NONE = 0,
	BF_SENDER_STARTING,			/* registered, not attached yet */
	BF_SENDER_RUNNING,			/* takes reservations */
	BF_SENDER_LEAVING			/* sends what is queued, takes no more */
} BfSenderState;

typedef struct BfAnnEntry
{
	uint64		seq;			/* order of reservation, all databases */
	int32		next;			/* next of its queue or of the free list */
	uint8		state;			/* BfAnnState */
	bool		cancelled;		/* its transaction aborted: nothing to send */
	uint16		len;
	char		payload[BF_ANN_PAYLOAD];
} BfAnnEntry;

typedef struct BfAnnDb
{
	Oid			dboid;			/* InvalidOid: slot unused */
	int32		head;			/* queue of entries, oldest first */
	int32		tail;
	int32		nqueued;
	uint8		sender;			/* BfSenderState */
	uint8		failed_starts;	/* in a row */
	pid_t		sender_pid;
	Latch	   *sender_latch;
	TimestampTz starting_since;
	TimestampTz no_start_until;
} BfAnnDb;

typedef struct BfAnnShared
{
	ConditionVariable resolved;
	uint64		next_seq;
	int32		free_head;
	int32		nfree;
	BfAnnDb		dbs[BF_ANN_DBS];
	BfAnnEntry	entries[BF_ANN_ENTRIES];
} BfAnnShared;

/* A payload of the current transaction, not reserved yet. */
typedef struct BfAnnPayload
{
	char	   *text;
	int			level;			/* subtransaction nesting level */
} BfAnnPayload;

/* Tests only: queue even when the notify lock is free. */
static bool bf_debug_announce_queued = false;

static BfAnnShared *BfAnn = NULL;
static LWLock *ann_lock = NULL;

/* The current transaction's part. */
static bool callbacks_registered = false;
static List *txn_payloads = NIL;	/* of BfAnnPayload, TopTransactionContext */
static bool txn_precommitted = false;
static Oid	txn_dboid = InvalidOid;
static int	txn_nreserved = 0;
static int32 txn_reserved[BF_ANN_ENTRIES];
static int	txn_ntaken = 0;
static int32 txn_taken[BF_ANN_ENTRIES];

/* The announcer's copy of what it takes. */
static char **sender_buf = NULL;
/* The announcer got as far as asking for its role (start not failed). */
static bool sender_attach_tried = false;

PG_FUNCTION_INFO_V1(bf_sql_announce);

static void bf_ann_register_callbacks(void);
static void bf_ann_xact_callback(XactEvent event, void *arg);
static void bf_ann_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									SubTransactionId parentSubid, void *arg);
static int	bf_ann_unique(BfAnnPayload ***out);
static void bf_ann_pre_commit(void);
static bool bf_ann_send_if_free(BfAnnPayload **p, int n);
static void bf_ann_send_now(BfAnnPayload **p, int n);
static int	bf_ann_take_before(BfAnnDb *db, uint64 before, char **queued);
static void bf_ann_notify(char **queued, int nqueued, BfAnnPayload **p, int n);
static void bf_ann_at_commit(void);
static void bf_ann_at_abort(void);
static void bf_ann_reset_txn(void);
static BfAnnDb *bf_ann_db(Oid dboid, bool add, TimestampTz now);
static void bf_ann_db_forget_if_idle(BfAnnDb *db, TimestampTz now);
static bool bf_ann_start_due(BfAnnDb *db, TimestampTz now);
static void bf_ann_start(Oid dboid);
static bool bf_ann_queue_busy(BfAnnDb *db, uint64 before);
static void bf_ann_append(BfAnnDb *db, int32 e);
static void bf_ann_pop(BfAnnDb *db);
static void bf_ann_sender_detach(int code, Datum arg);
static void bf_ann_start_failed(int code, Datum arg);

/* Declare batchflow.debug_announce_queued (any backend). */
void
bf_announce_define_gucs(void)
{
	DefineCustomBoolVariable("batchflow.debug_announce_queued",
							 "For tests: progress announcements always go through the database's announcer when it runs.",
							 "Off (the default), a transaction that finds no other commit notifying sends its payloads itself, at once.",
							 &bf_debug_announce_queued,
							 false,
							 PGC_SIGHUP,
							 GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);
}

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
	ann_lock = &(GetNamedLWLockTranche("batchflow announcements"))->lock;
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Announce payload on NOTIFY batchflow_progress when the current
 * transaction commits.  Without the shared queue (batchflow not
 * preloaded), and in a parallel worker (which PostgreSQL refuses), this
 * is NOTIFY itself.
 */
void
bf_announce(const char *payload)
{
	MemoryContext old;
	BfAnnPayload *p;

	if (BfAnn == NULL || IsParallelWorker())
	{
		Async_Notify(BF_ANNOUNCE_CHANNEL, payload);
		return;
	}
	/* pg_notify's own check, at the same moment. */
	if (strlen(payload) >= BF_NOTIFY_PAYLOAD_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload string too long")));
	if (txn_precommitted)
		elog(ERROR, "batchflow announcement after pre-commit");
	bf_ann_register_callbacks();
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc(sizeof(BfAnnPayload));
	p->text = pstrdup(payload);
	p->level = GetCurrentTransactionNestLevel();
	txn_payloads = lappend(txn_payloads, p);
	MemoryContextSwitchTo(old);
}

/*
 * batchflow._announce(payload text) returns void: bf_announce from SQL
 * (the progress triggers).  NULL is the empty payload, as for pg_notify.
 */
Datum
bf_sql_announce(PG_FUNCTION_ARGS)
{
	bf_announce(PG_ARGISNULL(0) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* Register the transaction callbacks, once per process. */
static void
bf_ann_register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(bf_ann_xact_callback, NULL);
	RegisterSubXactCallback(bf_ann_subxact_callback, NULL);
	callbacks_registered = true;
}

/* Reserve at pre-commit, resolve at commit or abort. */
static void
bf_ann_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			bf_ann_pre_commit();
			txn_precommitted = true;
			break;
		case XACT_EVENT_COMMIT:
			bf_ann_at_commit();
			bf_ann_reset_txn();
			break;
		case XACT_EVENT_ABORT:
			bf_ann_at_abort();
			bf_ann_reset_txn();
			break;
		case XACT_EVENT_PRE_PREPARE:
			{
				/* NOTIFY makes PostgreSQL refuse to prepare: keep that. */
				BfAnnPayload **p;
				int			n = bf_ann_unique(&p);

				for (int i = 0; i < n; i++)
					Async_Notify(BF_ANNOUNCE_CHANNEL, p[i]->text);
				txn_payloads = NIL;
				break;
			}
		case XACT_EVENT_PREPARE:
			bf_ann_reset_txn();
			break;
		default:
			break;
	}
}

/* A subtransaction's payloads go with it, or to its parent. */
static void
bf_ann_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, txn_payloads)
		{
			if (((BfAnnPayload *) lfirst(lc))->level >= level)
				txn_payloads = foreach_delete_current(txn_payloads, lc);
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, txn_payloads)
		{
			BfAnnPayload *p = lfirst(lc);

			if (p->level >= level)
				p->level = level - 1;
		}
	}
}

/* The transaction's payloads in order, each once (as NOTIFY does). */
static int
bf_ann_unique(BfAnnPayload ***out)
{
	int			n = 0;
	ListCell   *lc;

	*out = palloc(sizeof(BfAnnPayload *) * Max(list_length(txn_payloads), 1));
	foreach(lc, txn_payloads)
	{
		BfAnnPayload *p = lfirst(lc);
		bool		seen = false;

		for (int i = 0; i < n && !seen; i++)
			seen = strcmp((*out)[i]->text, p->text) == 0;
		if (!seen)
			(*out)[n++] = p;
	}
	return n;
}

/*
 * Pre-commit: reserve one entry per payload in the database's queue if
 * its announcer runs and they fit; otherwise notify in this transaction
 * (and start an announcer for the next ones).
 */
static void
bf_ann_pre_commit(void)
{
	BfAnnPayload **p;
	int			n;
	bool		served;
	bool		fits = true;
	bool		start = false;
	BfAnnDb    *db;
	TimestampTz now;

	if (txn_payloads == NIL)
		return;
	n = bf_ann_unique(&p);
	served = (bf_database_served() == BF_SERVED);
	for (int i = 0; i < n; i++)
		fits &= strlen(p[i]->text) < BF_ANN_PAYLOAD;
	now = GetCurrentTimestamp();
	txn_dboid = MyDatabaseId;

	/* No other commit is notifying right now: notify here, at once. */
	if (!bf_debug_announce_queued && bf_ann_send_if_free(p, n))
		return;

	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
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
			entry->len = strlen(p[i]->text);
			memcpy(entry->payload, p[i]->text, entry->len + 1);
			bf_ann_append(db, e);
			txn_reserved[txn_nreserved++] = e;
		}
		LWLockRelease(ann_lock);
		return;
	}
	if (served && db != NULL && bf_ann_start_due(db, now))
	{
		db->sender = BF_SENDER_STARTING;
		db->starting_since = now;
		start = true;
	}
	LWLockRelease(ann_lock);

	if (start)
		bf_ann_start(MyDatabaseId);
	bf_ann_send_now(p, n);
}

/*
 * The uncontended case: if no entry of this database reserved before now
 * is pending or being sent and PostgreSQL's notify lock is free, take
 * the lock (PreCommit_Notify then finds it held) and notify those entries
 * and this transaction's payloads here, as plain NOTIFY would: no delay,
 * no announcer transaction.  Otherwise false, holding nothing.  The lock
 * is only tried, never waited for, and is taken before the queue is
 * looked at again: a transaction that holds it never waits for an entry
 * (the announcer needs it to send them).
 */
static bool
bf_ann_send_if_free(BfAnnPayload **p, int n)
{
	LOCKTAG		tag;
	BfAnnDb    *db;
	uint64		before;
	bool		busy;
	char	  **queued;
	int			nqueued = 0;

	LWLockAcquire(ann_lock, LW_SHARED);
	before = BfAnn->next_seq;
	db = bf_ann_db(MyDatabaseId, false, 0);
	busy = (db != NULL && bf_ann_queue_busy(db, before));
	LWLockRelease(ann_lock);
	if (busy)
		return false;

	/* The lock PreCommit_Notify takes (async.c), without waiting. */
	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, InvalidOid, 0);
	if (LockAcquire(&tag, AccessExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;

	queued = palloc(sizeof(char *) * BF_ANN_ENTRIES);
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(MyDatabaseId, false, 0);
	if (db != NULL && bf_ann_queue_busy(db, before))
	{
		LWLockRelease(ann_lock);
		LockRelease(&tag, AccessExclusiveLock, false);
		return false;
	}
	if (db != NULL)
		nqueued = bf_ann_take_before(db, before, queued);
	LWLockRelease(ann_lock);
	bf_ann_notify(queued, nqueued, p, n);
	return true;
}

/*
 * The fallback: once no entry of this database reserved before now is
 * pending or being sent, take those entries and notify them, then this
 * transaction's payloads.  Entries reserved meanwhile belong to
 * transactions concurrent with this one: they stay for the announcer (or
 * the next fallback), and are not waited for, so a steady stream of
 * them cannot hold this transaction back.
 */
static void
bf_ann_send_now(BfAnnPayload **p, int n)
{
	BfAnnDb    *db;
	char	  **queued = palloc(sizeof(char *) * BF_ANN_ENTRIES);
	int			nqueued = 0;
	uint64		before;

	LWLockAcquire(ann_lock, LW_SHARED);
	before = BfAnn->next_seq;
	LWLockRelease(ann_lock);

	ConditionVariablePrepareToSleep(&BfAnn->resolved);
	for (;;)
	{
		LWLockAcquire(ann_lock, LW_EXCLUSIVE);
		db = bf_ann_db(MyDatabaseId, false, 0);
		if (db == NULL || !bf_ann_queue_busy(db, before))
			break;
		LWLockRelease(ann_lock);
		ConditionVariableSleep(&BfAnn->resolved, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	if (db != NULL)
		nqueued = bf_ann_take_before(db, before, queued);
	LWLockRelease(ann_lock);
	bf_ann_notify(queued, nqueued, p, n);
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

/*
 * NOTIFY the entries taken, then this transaction's payloads.  The
 * entries taken stay in place until this transaction ends, and no other
 * process writes them meanwhile: reading their text needs no lock.
 */
static void
bf_ann_notify(char **queued, int nqueued, BfAnnPayload **p, int n)
{
	for (int i = 0; i < nqueued; i++)
		Async_Notify(BF_ANNOUNCE_CHANNEL, queued[i]);
	for (int i = 0; i < n; i++)
		Async_Notify(BF_ANNOUNCE_CHANNEL, p[i]->text);
}

/* Commit: reserved entries become ready, taken ones are gone. */
static void
bf_ann_at_commit(void)
{
	BfAnnDb    *db;
	Latch	   *wake = NULL;
	TimestampTz now;

	if (txn_nreserved == 0 && txn_ntaken == 0)
		return;
	now = GetCurrentTimestamp();
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(txn_dboid, false, 0);
	if (db == NULL)
	{
		/* Cannot happen: queued entries keep their database's slot. */
		LWLockRelease(ann_lock);
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
	LWLockRelease(ann_lock);
	ConditionVariableBroadcast(&BfAnn->resolved);
	if (wake != NULL && txn_nreserved > 0)
		SetLatch(wake);
}

/* Abort: reserved entries are cancelled, taken ones ready again. */
static void
bf_ann_at_abort(void)
{
	BfAnnDb    *db;
	Latch	   *wake = NULL;

	if (txn_nreserved == 0 && txn_ntaken == 0)
		return;
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
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
	LWLockRelease(ann_lock);
	ConditionVariableBroadcast(&BfAnn->resolved);
	if (wake != NULL)
		SetLatch(wake);
}

/* Forget the transaction's part. */
static void
bf_ann_reset_txn(void)
{
	txn_payloads = NIL;
	txn_precommitted = false;
	txn_nreserved = 0;
	txn_ntaken = 0;
}

/*
 * The slot of a database; with add, a new one if there is room: an
 * unused slot, or one that nothing keeps any more (no entry, no
 * announcer, no start held off at "now"; left so by a database that was
 * dropped).  Locked.
 */
static BfAnnDb *
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
static void
bf_ann_db_forget_if_idle(BfAnnDb *db, TimestampTz now)
{
	if (db->nqueued == 0 && db->sender == BF_SENDER_NONE &&
		db->no_start_until <= now)
		db->dboid = InvalidOid;
}

/* May an announcer be started for this database now?  Locked. */
static bool
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

/* Start the database's announcer; if that fails, try later. */
static void
bf_ann_start(Oid dboid)
{
	BfAnnDb    *db;
	TimestampTz retry;

	if (bf_announce_start_sender(dboid))
		return;
	retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BF_ANN_RETRY_MS);
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(dboid, false, 0);
	if (db != NULL && db->sender == BF_SENDER_STARTING)
	{
		db->sender = BF_SENDER_NONE;
		db->failed_starts++;
		db->no_start_until = retry;
	}
	LWLockRelease(ann_lock);
}

/*
 * Is an entry of the queue reserved before sequence number "before"
 * pending or being sent?  Locked.
 */
static bool
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
static void
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

/*
 * The announcer, once connected: become the database's sender, unless
 * the start was called off (DROP DATABASE) or another one runs.
 */
bool
bf_announce_sender_attach(Oid dboid)
{
	BfAnnDb    *db;
	bool		ok = false;

	if (BfAnn == NULL)
		return false;
	bf_ann_register_callbacks();
	if (sender_buf == NULL)
	{
		sender_buf = MemoryContextAlloc(TopMemoryContext, sizeof(char *) * BF_ANN_ENTRIES);
		for (int i = 0; i < BF_ANN_ENTRIES; i++)
			sender_buf[i] = MemoryContextAlloc(TopMemoryContext, BF_ANN_PAYLOAD);
	}
	before_shmem_exit(bf_ann_sender_detach, (Datum) 0);
	sender_attach_tried = true;
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(dboid, false, 0);
	if (db != NULL && db->sender == BF_SENDER_STARTING)
	{
		db->sender = BF_SENDER_RUNNING;
		db->sender_pid = MyProcPid;
		db->sender_latch = MyLatch;
		db->failed_starts = 0;
		ok = true;
	}
	LWLockRelease(ann_lock);
	return ok;
}

/*
 * The announcer, before connecting: if it exits before it attaches (the
 * database is gone), its start has failed.
 */
void
bf_announce_sender_starting(Oid dboid)
{
	on_shmem_exit(bf_ann_start_failed, ObjectIdGetDatum(dboid));
}

/*
 * on_shmem_exit of an announcer: a start that never got as far as
 * attaching (it could not connect) failed.  Once it has tried, the state
 * is no longer this process's to change: a STARTING seen now is another
 * start's.
 */
static void
bf_ann_start_failed(int code, Datum arg)
{
	BfAnnDb    *db;
	TimestampTz retry;

	if (BfAnn == NULL || sender_attach_tried)
		return;
	retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BF_ANN_RETRY_MS);
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(DatumGetObjectId(arg), false, 0);
	if (db != NULL && db->sender == BF_SENDER_STARTING)
	{
		db->sender = BF_SENDER_NONE;
		db->failed_starts++;
		db->no_start_until = retry;
	}
	LWLockRelease(ann_lock);
}

/*
 * before_shmem_exit of the announcer: the database has no sender any
 * more; what it was sending is ready again (its transaction's abort
 * comes after this and finds it so).
 */
static void
bf_ann_sender_detach(int code, Datum arg)
{
	BfAnnDb    *db;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	for (int i = 0; i < txn_ntaken; i++)
		BfAnn->entries[txn_taken[i]].state = BF_ANN_READY;
	db = bf_ann_db(MyDatabaseId, false, 0);
	if (db != NULL && db->sender_pid == MyProcPid)
	{
		db->sender = BF_SENDER_NONE;
		db->sender_pid = 0;
		db->sender_latch = NULL;
		bf_ann_db_forget_if_idle(db, now);
	}
	LWLockRelease(ann_lock);
	ConditionVariableBroadcast(&BfAnn->resolved);
}

/*
 * The announcer: take the ready entries at the head of its queue (up to
 * the first pending one, or the first payload equal to one taken) for
 * the transaction it starts next; *payloads points at their copies.
 * Returns how many to notify.  *leave: the announcer is no longer the
 * database's sender, or is leaving and the queue is empty.
 */
int
bf_announce_take(char ***payloads, bool *leave)
{
	BfAnnDb    *db;
	int			n = 0;

	*leave = false;
	*payloads = sender_buf;
	txn_dboid = MyDatabaseId;
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(MyDatabaseId, false, 0);
	if (db == NULL || db->sender_pid != MyProcPid)
	{
		LWLockRelease(ann_lock);
		*leave = true;
		return 0;
	}
	/* Cancelled entries at the head: nothing to send, free them now. */
	while (db->head >= 0 && BfAnn->entries[db->head].state == BF_ANN_READY &&
		   BfAnn->entries[db->head].cancelled)
		bf_ann_pop(db);
	for (int32 e = db->head; e >= 0; e = BfAnn->entries[e].next)
	{
		BfAnnEntry *entry = &BfAnn->entries[e];
		bool		dup = false;

		if (entry->state != BF_ANN_READY)
			break;
		for (int i = 0; i < n && !entry->cancelled && !dup; i++)
			dup = strcmp(sender_buf[i], entry->payload) == 0;
		if (dup)
			break;
		entry->state = BF_ANN_SENDING;
		txn_taken[txn_ntaken++] = e;
		if (!entry->cancelled)
			memcpy(sender_buf[n++], entry->payload, entry->len + 1);
	}
	if (n == 0 && db->sender == BF_SENDER_LEAVING && db->nqueued == 0)
		*leave = true;
	LWLockRelease(ann_lock);
	if (n > 0)
		ConditionVariableBroadcast(&BfAnn->resolved);
	return n;
}

/*
 * The announcer, idle for BF_ANNOUNCER_IDLE_MS: leave if nothing is
 * queued (a transaction reserving from now on sees no sender).
 */
bool
bf_announce_sender_idle_exit(void)
{
	BfAnnDb    *db;
	bool		leave = true;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(MyDatabaseId, false, 0);
	if (db != NULL && db->sender_pid == MyProcPid)
	{
		if (db->nqueued > 0)
			leave = false;
		else
		{
			db->sender = BF_SENDER_NONE;
			db->sender_pid = 0;
			db->sender_latch = NULL;
			bf_ann_db_forget_if_idle(db, now);
		}
	}
	LWLockRelease(ann_lock);
	return leave;
}

/*
 * DROP DATABASE, ALTER DATABASE RENAME, CREATE DATABASE TEMPLATE (from
 * database_hook.c): the database's announcer sends what is queued and
 * leaves, none starts for a while, and this waits (up to five seconds)
 * for it to be gone.
 */
void
bf_announce_release(Oid dboid)
{
	BfAnnDb    *db;
	pid_t		pid = 0;
	Latch	   *latch = NULL;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until = TimestampTzPlusMilliseconds(now, 5000);

	if (BfAnn == NULL)
		return;
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	db = bf_ann_db(dboid, true, now);
	if (db != NULL)
	{
		db->no_start_until = TimestampTzPlusMilliseconds(now, BF_ANN_RETRY_MS);
		if (db->sender == BF_SENDER_STARTING)
			db->sender = BF_SENDER_NONE;
		else if (db->sender == BF_SENDER_RUNNING)
			db->sender = BF_SENDER_LEAVING;
		pid = db->sender_pid;
		latch = db->sender_latch;
	}
	LWLockRelease(ann_lock);
	if (pid == 0)
		return;
	SetLatch(latch);

	ConditionVariablePrepareToSleep(&BfAnn->resolved);
	for (;;)
	{
		bool		gone;
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		LWLockAcquire(ann_lock, LW_SHARED);
		db = bf_ann_db(dboid, false, 0);
		gone = (db == NULL || db->sender_pid != pid);
		LWLockRelease(ann_lock);
		if (gone || left <= 0)
			break;
		(void) ConditionVariableTimedSleep(&BfAnn->resolved, left, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/*
 * The launcher, each round: a database whose announcer died with entries
 * queued gets a new one (or, after BF_ANN_MAX_FAILED_STARTS failed starts
 * in a row, loses those entries, with a WARNING: the database is gone).
 */
void
bf_announce_rescue(void)
{
	Oid			start[BF_ANN_DBS];
	int			nstart = 0;
	Oid			dropped[BF_ANN_DBS];
	int			lost[BF_ANN_DBS];
	int			ndropped = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (BfAnn == NULL)
		return;
	LWLockAcquire(ann_lock, LW_EXCLUSIVE);
	for (int d = 0; d < BF_ANN_DBS; d++)
	{
		BfAnnDb    *db = &BfAnn->dbs[d];

		if (db->dboid == InvalidOid || db->nqueued == 0 ||
			!bf_ann_start_due(db, now))
			continue;
		if (db->failed_starts >= BF_ANN_MAX_FAILED_STARTS &&
			!bf_ann_queue_busy(db, PG_UINT64_MAX))
		{
			dropped[ndropped] = db->dboid;
			lost[ndropped] = 0;
			while (db->nqueued > 0)
			{
				lost[ndropped] += !BfAnn->entries[db->head].cancelled;
				bf_ann_pop(db);
			}
			ndropped++;
			db->sender = BF_SENDER_NONE;
			db->failed_starts = 0;
			db->dboid = InvalidOid;
			continue;
		}
		db->sender = BF_SENDER_STARTING;
		db->starting_since = now;
		start[nstart++] = db->dboid;
	}
	LWLockRelease(ann_lock);
	for (int i = 0; i < ndropped; i++)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batchflow dropped %d progress announcements of database %u",
						lost[i], dropped[i]),
				 errdetail("No announcer could connect to the database %d times in a row; it was probably dropped.",
						   BF_ANN_MAX_FAILED_STARTS)));
	for (int i = 0; i < nstart; i++)
		bf_ann_start(start[i]);
}
