/*-------------------------------------------------------------------------
 *
 * announce_sender.c
 *	  The announcer's side of the shared queue of announcements
 *	  (announce_queue.c): a database's announcer is started, attaches as
 *	  the database's sender, takes the ready entries at the head of the
 *	  queue, and leaves when idle or when DROP DATABASE and the like call
 *	  it off; the launcher starts a new one where one died with entries
 *	  queued.
 *
 *	  Invariants: a database has at most one sender, the process whose
 *	  pid is in its slot; only that process takes its entries, and when
 *	  it exits what it was sending is ready again.  A start that never
 *	  attaches counts as failed, and after BF_ANN_MAX_FAILED_STARTS in a
 *	  row the launcher drops the database's entries (it was dropped).
 *	  This file uses announce_queue.c, never the other way round, and
 *	  only names the announcer's entry point (announcer.c), which calls
 *	  this file.
 *
 * IDENTIFICATION
 *	  src/announce_sender.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "announce_queue.h"
#include "announce_sender.h"

/* After a failed start, or DROP DATABASE, no announcer for this long. */
#define BF_ANN_RETRY_MS 10000
/* Failed starts in a row after which orphan entries are dropped. */
#define BF_ANN_MAX_FAILED_STARTS 3

/* The announcer's copy of what it takes. */
static char **sender_buf = NULL;
/* The announcer got as far as asking for its role (start not failed). */
static bool sender_attach_tried = false;

static bool bf_announce_start_sender(Oid dboid);
static void bf_ann_sender_detach(int code, Datum arg);
static void bf_ann_start_failed(int code, Datum arg);

/* Start the database's announcer; if that fails, try later. */
void
bf_announce_start(Oid dboid)
{
	BfAnnDb    *db;
	TimestampTz retry;

	if (bf_announce_start_sender(dboid))
		return;
	retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), BF_ANN_RETRY_MS);
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(dboid, false, 0);
	if (db != NULL && db->sender == BF_SENDER_STARTING)
	{
		db->sender = BF_SENDER_NONE;
		db->failed_starts++;
		db->no_start_until = retry;
	}
	LWLockRelease(BfAnnLock);
}

/* Register the announcer of a database; false if no slot is free. */
static bool
bf_announce_start_sender(Oid dboid)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "batchflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bf_announcer_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "batchflow announcer");
	snprintf(worker.bgw_type, BGW_MAXLEN, "batchflow announcer");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = 0;
	return RegisterDynamicBackgroundWorker(&worker, NULL);
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
	if (sender_buf == NULL)
	{
		sender_buf = MemoryContextAlloc(TopMemoryContext, sizeof(char *) * BF_ANN_ENTRIES);
		for (int i = 0; i < BF_ANN_ENTRIES; i++)
			sender_buf[i] = MemoryContextAlloc(TopMemoryContext, BF_ANN_PAYLOAD);
	}
	before_shmem_exit(bf_ann_sender_detach, (Datum) 0);
	sender_attach_tried = true;
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(dboid, false, 0);
	if (db != NULL && db->sender == BF_SENDER_STARTING)
	{
		db->sender = BF_SENDER_RUNNING;
		db->sender_pid = MyProcPid;
		db->sender_latch = MyLatch;
		db->failed_starts = 0;
		ok = true;
	}
	LWLockRelease(BfAnnLock);
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
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(DatumGetObjectId(arg), false, 0);
	if (db != NULL && db->sender == BF_SENDER_STARTING)
	{
		db->sender = BF_SENDER_NONE;
		db->failed_starts++;
		db->no_start_until = retry;
	}
	LWLockRelease(BfAnnLock);
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

	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	bf_ann_taken_ready();
	db = bf_ann_db(MyDatabaseId, false, 0);
	if (db != NULL && db->sender_pid == MyProcPid)
	{
		db->sender = BF_SENDER_NONE;
		db->sender_pid = 0;
		db->sender_latch = NULL;
		bf_ann_db_forget_if_idle(db, now);
	}
	LWLockRelease(BfAnnLock);
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
	bf_annq_txn_begin();
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
	db = bf_ann_db(MyDatabaseId, false, 0);
	if (db == NULL || db->sender_pid != MyProcPid)
	{
		LWLockRelease(BfAnnLock);
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
		bf_ann_took(e);
		if (!entry->cancelled)
			memcpy(sender_buf[n++], entry->payload, entry->len + 1);
	}
	if (n == 0 && db->sender == BF_SENDER_LEAVING && db->nqueued == 0)
		*leave = true;
	LWLockRelease(BfAnnLock);
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

	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
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
	LWLockRelease(BfAnnLock);
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
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
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
	LWLockRelease(BfAnnLock);
	if (pid == 0)
		return;
	SetLatch(latch);

	ConditionVariablePrepareToSleep(&BfAnn->resolved);
	for (;;)
	{
		bool		gone;
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		LWLockAcquire(BfAnnLock, LW_SHARED);
		db = bf_ann_db(dboid, false, 0);
		gone = (db == NULL || db->sender_pid != pid);
		LWLockRelease(BfAnnLock);
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
	LWLockAcquire(BfAnnLock, LW_EXCLUSIVE);
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
	LWLockRelease(BfAnnLock);
	for (int i = 0; i < ndropped; i++)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batchflow dropped %d progress announcements of database %u",
						lost[i], dropped[i]),
				 errdetail("No announcer could connect to the database %d times in a row; it was probably dropped.",
						   BF_ANN_MAX_FAILED_STARTS)));
	for (int i = 0; i < nstart; i++)
		bf_announce_start(start[i]);
}
