/*-------------------------------------------------------------------------
 *
 * databases.c
 *	  The databases the worker pool serves, and the lending of worker
 *	  slots to them.
 *
 *	  A background worker connects to one database for life, so the pool
 *	  of batchflow.max_workers slots is shared out among databases: the
 *	  launcher (connected to no database) lends a free slot to a database
 *	  that wants a worker, starts a worker for it there, and asks a worker
 *	  to hand its slot back when another database needs it more.  Items are
 *	  never handed over; only slots are.
 *
 *	  This file owns the shared structure: one entry per database that has
 *	  (or wants) workers, and one lending record per worker slot.  A
 *	  database asks for a worker by setting its entry's `wanted` flag and
 *	  the launcher's latch:
 *	    - at the commit of CREATE EXTENSION / ALTER EXTENSION UPDATE
 *	      (bf_db_register_on_commit, from the install and upgrade scripts);
 *	    - at the commit of new work (bf_db_note_work) when none of its
 *	      workers is idle;
 *	    - when a worker claims an item and none of the others is idle
 *	      (bf_db_worker_more_work): the database could use one more.
 *	  The launcher's share-out (bf_db_balance) gives wanting databases
 *	  free slots first, fewest workers first; when none is free it takes an
 *	  idle worker of another database, or else a busy worker of a database
 *	  holding more than an even share of the pool: so no database starves
 *	  another, and a busy database keeps the whole pool when alone.  The
 *	  policy is db_shareout.c, a pure function over the table that this
 *	  file hands it under the lock; the workers it takes slots from are
 *	  signalled here, after the lock is released.
 *
 *	  Per database, the entry also records what the workers there do once:
 *	  the first worker after the entry was made runs the recovery (items
 *	  left running by processes that no longer exist go back to the queue,
 *	  progress counters of open loops are rebuilt: db_sweep.c) before any
 *	  worker there claims, and one worker at a time sweeps every poll
 *	  interval.
 *
 *	  An entry whose database has no worker and wants none is freed; the
 *	  next registration starts it afresh (with a recovery, which is right:
 *	  no worker of it lives).  Entries and loans are protected by one
 *	  LWLock ("batchflow databases"), taken only in this file; no section
 *	  under it signals a process (the liveness probes kill(pid, 0) of the
 *	  recovery claim excepted, which do not block).  Whether a database is
 *	  served at all (settings, templates) is db_served.c, which needs no
 *	  shared state and sits above this file (it calls bf_databases_attached,
 *	  bf_every_database and bf_db_register_on_commit; nothing here calls it).
 *
 * IDENTIFICATION
 *	  src/databases.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "batchflow.h"
#include "databases.h"
#include "db_shareout.h"

typedef struct BfDatabasesShared
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	Oid			only_dboid;		/* batchflow.database_name's, once known */
	int			nslots;
	int			rr;				/* where the next share-out starts */
	BfDbEntry	dbs[BF_MAX_DATABASES];	/* the table (db_shareout.h) */
	BfSlotLend	slots[FLEXIBLE_ARRAY_MEMBER];
} BfDatabasesShared;

static BfDatabasesShared *BfDbs = NULL;

int			bf_worker_idle_timeout_ms = 10000;

/* This process's slot and database, when it is an item worker. */
static int	my_slotno = -1;
static Oid	my_dboid = InvalidOid;
static bool register_pending = false;
static bool xact_callback_registered = false;

static BfDbEntry *bf_db_find(Oid dboid);
static BfDbEntry *bf_db_find_or_add(Oid dboid, bool fresh);
static void bf_db_wake_launcher(void);
static void bf_db_worker_detach(int code, Datum arg);
static void bf_db_xact_callback(XactEvent event, void *arg);
static bool bf_db_has_idle_worker(Oid dboid);
static void bf_db_free_unused(void);

/* The settings of this file (from _PG_init, when preloaded). */
void
bf_databases_define_gucs(void)
{
	DefineCustomIntVariable("batchflow.worker_idle_timeout",
							"How long an item worker waits for work before it hands its slot back.",
							"Only when the pool serves every database (batchflow.database_name is empty): a worker of a database with nothing to do exits after this time, so that its slot can serve another database and the database can be dropped. 0 keeps idle workers.",
							&bf_worker_idle_timeout_ms,
							10000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* Is the pool's shared memory there (batchflow preloaded)? */
bool
bf_databases_attached(void)
{
	return BfDbs != NULL;
}

/* Does the pool serve every database (batchflow.database_name empty)? */
bool
bf_every_database(void)
{
	return bf_database_name == NULL || bf_database_name[0] == '\0';
}

/* Bytes of shared memory needed. */
Size
bf_databases_shmem_size(void)
{
	return add_size(offsetof(BfDatabasesShared, slots),
					mul_size(bf_max_workers, sizeof(BfSlotLend)));
}

/* Reserve the shared memory and the lock (shmem_request_hook). */
void
bf_databases_shmem_request(void)
{
	RequestAddinShmemSpace(bf_databases_shmem_size());
	RequestNamedLWLockTranche("batchflow databases", 1);
}

/* Create or attach to the structure (shmem_startup_hook). */
void
bf_databases_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BfDbs = ShmemInitStruct("batchflow databases", bf_databases_shmem_size(), &found);
	if (!found)
	{
		memset(BfDbs, 0, bf_databases_shmem_size());
		BfDbs->lock = &(GetNamedLWLockTranche("batchflow databases"))->lock;
		BfDbs->nslots = bf_max_workers;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The entry of dboid, or NULL (lock held). */
static BfDbEntry *
bf_db_find(Oid dboid)
{
	for (int i = 0; i < BF_MAX_DATABASES; i++)
		if (BfDbs->dbs[i].dboid == dboid)
			return &BfDbs->dbs[i];
	return NULL;
}

/* The entry of dboid, made if missing; NULL if all are taken (lock held). */
static BfDbEntry *
bf_db_find_or_add(Oid dboid, bool fresh)
{
	BfDbEntry  *e = bf_db_find(dboid);

	if (e == NULL)
	{
		bf_db_free_unused();
		e = bf_db_find(InvalidOid);
		if (e == NULL)
			return NULL;
		memset(e, 0, sizeof(BfDbEntry));
		e->dboid = dboid;
		fresh = true;
	}
	if (fresh)
	{
		e->blocked = false;
		e->recovered = false;
		e->backoff_until = 0;
	}
	return e;
}

/* Free the entries of databases with no worker that want none (lock held). */
static void
bf_db_free_unused(void)
{
	for (int i = 0; i < BF_MAX_DATABASES; i++)
	{
		BfDbEntry  *e = &BfDbs->dbs[i];
		bool		used = false;

		if (e->dboid == InvalidOid || e->wanted)
			continue;
		for (int s = 0; s < BfDbs->nslots && !used; s++)
			used = BfDbs->slots[s].dboid == e->dboid;
		if (!used)
			e->dboid = InvalidOid;
	}
}

/* Set the launcher's latch, if there is a launcher. */
static void
bf_db_wake_launcher(void)
{
	Latch	   *latch = BfDbs->launcher_latch;

	if (latch != NULL)
		SetLatch(latch);
}

/* The launcher found the OID of the one database batchflow.database_name names. */
void
bf_db_set_only(Oid dboid)
{
	if (BfDbs != NULL)
		BfDbs->only_dboid = dboid;
}

/* The launcher says where its latch is (NULL when it exits). */
void
bf_db_set_launcher(Latch *latch)
{
	if (BfDbs != NULL)
		BfDbs->launcher_latch = latch;
}

/*
 * Ask for a worker in database dboid.  fresh: the extension was just
 * created or updated there: redo the first-visit recovery, lift a block.
 */
void
bf_db_register(Oid dboid, bool fresh)
{
	BfDbEntry  *e;

	if (BfDbs == NULL)
		return;
	/* With one database named, no other ever gets a worker. */
	if (!bf_every_database() && dboid != BfDbs->only_dboid)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	e = bf_db_find_or_add(dboid, fresh);
	if (e != NULL)
		e->wanted = true;
	LWLockRelease(BfDbs->lock);
	if (e == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("batchflow workers serve at most %d databases at once", BF_MAX_DATABASES),
				 errdetail("Database with OID %u waits until another database has no worker left.", dboid)));
	bf_db_wake_launcher();
}

/*
 * Register the current database when this transaction commits.  The caller
 * (batchflow._database_ready, db_served.c) has checked that the pool serves
 * this database.
 */
void
bf_db_register_on_commit(void)
{
	if (BfDbs == NULL)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(bf_db_xact_callback, NULL);
		xact_callback_registered = true;
	}
	register_pending = true;
}

/* At commit, register; at abort, forget it. */
static void
bf_db_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && register_pending)
		bf_db_register(MyDatabaseId, true);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		register_pending = false;
}

/* Is one of dboid's workers waiting for work? (lock held) */
static bool
bf_db_has_idle_worker(Oid dboid)
{
	for (int s = 0; s < BfDbs->nslots; s++)
	{
		BfSlotLend *l = &BfDbs->slots[s];

		if (l->dboid == dboid && l->pid != 0 && l->idle && !l->exit_requested)
			return true;
	}
	return false;
}

/* New work committed in dboid: make sure a worker will take it. */
void
bf_db_note_work(Oid dboid)
{
	bool		idle;

	if (BfDbs == NULL || !OidIsValid(dboid))
		return;
	LWLockAcquire(BfDbs->lock, LW_SHARED);
	idle = bf_db_has_idle_worker(dboid);
	LWLockRelease(BfDbs->lock);
	if (!idle)
		bf_db_register(dboid, false);
}

/* Is worker slot slotno lent to database dboid? */
bool
bf_db_slot_serves(int slotno, Oid dboid)
{
	bool		serves;

	if (BfDbs == NULL || slotno < 0 || slotno >= BfDbs->nslots)
		return false;
	LWLockAcquire(BfDbs->lock, LW_SHARED);
	serves = BfDbs->slots[slotno].dboid == dboid;
	LWLockRelease(BfDbs->lock);
	return serves;
}

/*
 * An item worker takes up its loan (before it connects).  exit_requested
 * is kept: a lend starts without it, so it is set only when the slot was
 * asked back while the worker was starting (bf_db_release, the
 * share-out), and the worker must then leave without connecting.
 */
void
bf_db_worker_attach(int slotno, Oid dboid)
{
	BfSlotLend *l;

	if (BfDbs == NULL || slotno < 0 || slotno >= BfDbs->nslots)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	l = &BfDbs->slots[slotno];
	l->dboid = dboid;
	l->pid = MyProcPid;
	l->idle = false;
	LWLockRelease(BfDbs->lock);
	my_slotno = slotno;
	my_dboid = dboid;
	before_shmem_exit(bf_db_worker_detach, (Datum) 0);
}

/* At exit: the slot stays lent until the launcher sees the process gone. */
static void
bf_db_worker_detach(int code, Datum arg)
{
	BfDbEntry  *e;

	if (BfDbs == NULL || my_slotno < 0)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	BfDbs->slots[my_slotno].idle = false;
	e = bf_db_find(my_dboid);
	if (e != NULL && e->recovering == MyProcPid)
		e->recovering = 0;
	LWLockRelease(BfDbs->lock);
	bf_db_wake_launcher();
	my_slotno = -1;
}

/* The worker waits for work (true) or works (false). */
void
bf_db_worker_set_idle(bool idle)
{
	if (BfDbs == NULL || my_slotno < 0)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	BfDbs->slots[my_slotno].idle = idle;
	LWLockRelease(BfDbs->lock);
}

/* Does the launcher want this worker's slot back? */
bool
bf_db_worker_exit_requested(void)
{
	bool		requested;

	if (BfDbs == NULL || my_slotno < 0)
		return false;
	LWLockAcquire(BfDbs->lock, LW_SHARED);
	requested = BfDbs->slots[my_slotno].exit_requested;
	LWLockRelease(BfDbs->lock);
	return requested;
}

/*
 * May this worker claim items?  Not before the database's first-visit
 * recovery is done; *mine: this worker is the one to run it now.
 */
bool
bf_db_worker_recovery(bool *mine)
{
	BfDbEntry  *e;
	bool		ready = true;

	*mine = false;
	if (BfDbs == NULL || my_slotno < 0)
		return true;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	e = bf_db_find_or_add(my_dboid, false);
	if (e != NULL && !e->recovered)
	{
		ready = false;
		if (e->recovering == 0 ||
			(e->recovering != MyProcPid && kill(e->recovering, 0) != 0))
		{
			e->recovering = MyProcPid;
			*mine = true;
		}
		else if (e->recovering == MyProcPid)
			*mine = true;
	}
	LWLockRelease(BfDbs->lock);
	return ready;
}

/* The first-visit recovery committed: the database may have more workers. */
void
bf_db_worker_recovered(void)
{
	BfDbEntry  *e;

	if (BfDbs == NULL || my_slotno < 0)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	e = bf_db_find(my_dboid);
	if (e != NULL)
	{
		e->recovered = true;
		e->recovering = 0;
		e->last_sweep = GetCurrentTimestamp();
	}
	LWLockRelease(BfDbs->lock);
	/* The launcher held the database's other workers back until now. */
	bf_db_wake_launcher();
}

/* Is it this worker's turn to sweep its database? */
bool
bf_db_worker_sweep_due(int interval_ms)
{
	BfDbEntry  *e;
	bool		due = false;
	TimestampTz now = GetCurrentTimestamp();

	if (BfDbs == NULL || my_slotno < 0)
		return false;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	e = bf_db_find(my_dboid);
	if (e != NULL && e->recovered &&
		TimestampDifferenceExceeds(e->last_sweep, now, interval_ms))
	{
		e->last_sweep = now;
		due = true;
	}
	LWLockRelease(BfDbs->lock);
	return due;
}

/*
 * This worker just claimed an item: if no other worker of its database is
 * idle, the database could use another (at most every 20 ms per worker).
 */
void
bf_db_worker_more_work(void)
{
	static TimestampTz last = 0;
	TimestampTz now;
	bool		idle;
	bool		wanted;
	BfDbEntry  *e;

	if (BfDbs == NULL || my_slotno < 0)
		return;
	now = GetCurrentTimestamp();
	if (!TimestampDifferenceExceeds(last, now, 20))
		return;
	last = now;
	LWLockAcquire(BfDbs->lock, LW_SHARED);
	idle = bf_db_has_idle_worker(my_dboid);
	e = bf_db_find(my_dboid);
	wanted = e == NULL || e->wanted;
	LWLockRelease(BfDbs->lock);
	if (!idle && !wanted)
		bf_db_register(my_dboid, false);
}

/*
 * The worker leaves its database for good: block (the extension there is
 * of another version: no worker until it is updated) or forget it (no
 * extension there).
 */
void
bf_db_worker_leave(bool block)
{
	BfDbEntry  *e;

	if (BfDbs == NULL || my_slotno < 0)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	e = bf_db_find(my_dboid);
	if (e != NULL)
	{
		e->wanted = false;
		if (block)
			e->blocked = true;
		else
		{
			bool		others = false;

			for (int s = 0; s < BfDbs->nslots; s++)
				if (s != my_slotno && BfDbs->slots[s].dboid == my_dboid)
					others = true;
			if (!others)
				e->dboid = InvalidOid;
		}
	}
	LWLockRelease(BfDbs->lock);
}

/* The launcher saw the worker of slotno gone: the slot is free again. */
void
bf_db_slot_released(int slotno)
{
	BfSlotLend *l;
	BfDbEntry  *e;

	if (BfDbs == NULL || slotno < 0 || slotno >= BfDbs->nslots)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	l = &BfDbs->slots[slotno];
	/* A worker that died before it attached: its database backs off. */
	if (OidIsValid(l->dboid) && l->pid == 0 && (e = bf_db_find(l->dboid)) != NULL)
		e->backoff_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000);
	memset(l, 0, sizeof(BfSlotLend));
	LWLockRelease(BfDbs->lock);
}

/* The database is gone (dropped): forget its entry. */
void
bf_db_forget(Oid dboid)
{
	BfDbEntry  *e;

	if (BfDbs == NULL)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	e = bf_db_find(dboid);
	if (e != NULL)
		e->dboid = InvalidOid;
	LWLockRelease(BfDbs->lock);
}

/* The databases that have an entry; returns how many (at most max). */
int
bf_db_list(Oid *oids, int max)
{
	int			n = 0;

	if (BfDbs == NULL)
		return 0;
	LWLockAcquire(BfDbs->lock, LW_SHARED);
	for (int i = 0; i < BF_MAX_DATABASES && n < max; i++)
		if (OidIsValid(BfDbs->dbs[i].dboid))
			oids[n++] = BfDbs->dbs[i].dboid;
	LWLockRelease(BfDbs->lock);
	return n;
}

/*
 * The launcher's share-out (db_shareout.c) over the table, under its lock.
 * alive[s]: the worker lent slot s still runs (or is starting).  Fills
 * orders with the slots to start a worker for (already lent to their
 * database) and returns how many; the workers whose slot another database
 * needs are signalled to exit, after the lock is released.
 */
int
bf_db_balance(const bool *alive, BfStartOrder *orders, bool keep_full)
{
	BfDbTable	t;
	pid_t		to_signal[BF_MAX_MAX_WORKERS];
	int			nsignal;
	int			norders;
	TimestampTz now = GetCurrentTimestamp();

	if (BfDbs == NULL)
		return 0;
	t.dbs = BfDbs->dbs;
	t.slots = BfDbs->slots;
	t.nslots = BfDbs->nslots;
	t.rr = &BfDbs->rr;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	norders = bf_shareout(&t, alive, now, keep_full, orders, to_signal, &nsignal);
	LWLockRelease(BfDbs->lock);
	for (int i = 0; i < nsignal; i++)
		kill(to_signal[i], SIGUSR1);
	return norders;
}

/*
 * A command needs database dboid without connections (database_hook.c):
 * ask its workers to hand their slots back, keep new ones away for ten
 * seconds, and wait up to five seconds for them to be gone.  A slot lent
 * to the database whose worker is still starting (no pid yet) counts as
 * a worker to wait for: it leaves as soon as it attaches, before it
 * connects (bf_worker_db_connect), and is signalled if it attached
 * meanwhile.  Waiting only for the pids known at the start let such a
 * worker connect after the wait, and the command then failed with
 * "being accessed by other users".
 */
void
bf_db_release(Oid dboid)
{
	BfDbEntry  *e;
	pid_t		signalled[BF_MAX_MAX_WORKERS];
	int			nsignalled = 0;

	if (BfDbs == NULL)
		return;
	LWLockAcquire(BfDbs->lock, LW_EXCLUSIVE);
	e = bf_db_find(dboid);
	if (e != NULL)
	{
		e->wanted = false;
		e->backoff_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
	}
	for (int s = 0; s < BfDbs->nslots; s++)
		if (BfDbs->slots[s].dboid == dboid)
			BfDbs->slots[s].exit_requested = true;
	LWLockRelease(BfDbs->lock);

	for (int wait = 0; wait < 100; wait++)
	{
		pid_t		pids[BF_MAX_MAX_WORKERS];
		int			n = 0;
		int			alive = 0;

		/* Copy the database's slots out; signal and probe after. */
		LWLockAcquire(BfDbs->lock, LW_SHARED);
		for (int s = 0; s < BfDbs->nslots; s++)
			if (BfDbs->slots[s].dboid == dboid)
				pids[n++] = BfDbs->slots[s].pid;
		LWLockRelease(BfDbs->lock);

		for (int i = 0; i < n; i++)
		{
			bool		known = false;

			if (pids[i] == 0)
			{
				alive++;		/* still starting */
				continue;
			}
			if (kill(pids[i], 0) != 0)
				continue;		/* gone; the launcher frees the slot */
			alive++;
			for (int j = 0; j < nsignalled && !known; j++)
				known = signalled[j] == pids[i];
			if (!known && nsignalled < lengthof(signalled))
			{
				signalled[nsignalled++] = pids[i];
				kill(pids[i], SIGUSR1);
			}
		}
		if (alive == 0)
			break;
		CHECK_FOR_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
