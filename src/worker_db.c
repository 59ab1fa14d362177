/*-------------------------------------------------------------------------
 *
 * worker_db.c
 *	  What an item worker does about the database it serves: connecting to
 *	  the database its slot is lent to, leaving it when the extension is
 *	  not there (or not of the library's version), the database's recovery
 *	  and sweeps, and handing its slot back.
 *
 *	  A worker hands its slot back (exits) when the launcher asks for it,
 *	  after the current item's transaction; and, when the pool serves every
 *	  database, after batchflow.worker_idle_timeout with nothing to do, so
 *	  that an idle database holds no slot and no connection.  Before it
 *	  leaves for idleness it stops counting as idle and looks for work one
 *	  last time: work committed before that is seen by this last look, work
 *	  committed after it asks the launcher for a worker (databases.c).
 *
 * IDENTIFICATION
 *	  src/worker_db.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "batchflow.h"
#include "databases.h"
#include "db_served.h"
#include "db_sweep.h"
#include "pool.h"
#include "version_check.h"
#include "wakeup.h"
#include "worker_db.h"

static TimestampTz idle_since = 0;	/* 0: working */
static TimestampTz last_check = 0;	/* extension looked for */
static bool leaving = false;	/* one last look for work, then exit */
static bool warned_version = false;

static bool bf_worker_db_check_extension(long *sleep_ms);

/* Take slot slotno and connect to the database it is lent to. */
void
bf_worker_db_connect(int slotno)
{
	Oid			dboid;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	if (!OidIsValid(dboid))
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batchflow worker %d was started without a database", slotno)));
	bf_pool_attach(slotno);
	bf_idle_attach(slotno, MyLatch);
	bf_pool_set_database(dboid);
	bf_db_worker_attach(slotno, dboid);
	/* Asked back while starting (e.g. DROP DATABASE): never connect. */
	if (bf_db_worker_exit_requested())
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
}

/*
 * Is the extension installed here, at the library's version?  If not, in
 * every-database mode the worker leaves the database (exits); with one
 * database named, it waits (*sleep_ms) for CREATE EXTENSION or UPDATE.
 */
static bool
bf_worker_db_check_extension(long *sleep_ms)
{
	char	   *version;
	bool		ok;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (bf_database_served() != BF_SERVED)
	{
		/* A template (or not the database named): never served. */
		CommitTransactionCommand();
		bf_db_worker_leave(false);
		proc_exit(0);
	}
	version = bf_installed_version();
	ok = version != NULL && strcmp(version, BF_VERSION) == 0;
	if (version != NULL && !ok && !warned_version)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batchflow workers do not serve database \"%s\": its SQL objects are of version %s, the library is %s",
						get_database_name(MyDatabaseId), version, BF_VERSION),
				 errdetail("Runs of this database wait until the extension is updated."),
				 errhint("Run ALTER EXTENSION batchflow UPDATE in database \"%s\".",
						 get_database_name(MyDatabaseId))));
		warned_version = true;
	}
	CommitTransactionCommand();
	if (ok)
		return true;

	if (bf_every_database())
	{
		/* Registered again by CREATE EXTENSION or ALTER EXTENSION UPDATE. */
		bf_db_worker_leave(version != NULL);
		proc_exit(0);
	}
	*sleep_ms = bf_poll_interval_ms;
	return false;
}

/*
 * Before each step: may the worker claim items now?  Exits if the launcher
 * wants the slot back; runs the database's recovery or sweep when it is
 * this worker's turn.  false: sleep *sleep_ms instead.
 */
bool
bf_worker_db_ready(long *sleep_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		mine;

	if (bf_db_worker_exit_requested())
		proc_exit(0);

	if (last_check == 0 || TimestampDifferenceExceeds(last_check, now, 1000))
	{
		last_check = now;
		if (!bf_worker_db_check_extension(sleep_ms))
			return false;
	}

	if (!bf_db_worker_recovery(&mine))
	{
		if (!mine)
		{
			*sleep_ms = 100;
			return false;
		}
		if (!bf_db_sweep(true))
		{
			last_check = 0;
			*sleep_ms = 100;
			return false;
		}
		bf_db_worker_recovered();
	}
	else if (bf_db_worker_sweep_due(bf_poll_interval_ms))
		(void) bf_db_sweep(false);
	return true;
}

/* The worker claimed an item: it works, and maybe the database wants more. */
void
bf_worker_db_claimed(void)
{
	idle_since = 0;
	leaving = false;
	bf_db_worker_more_work();
}

/*
 * Nothing to claim: the worker is about to sleep up to *sleep_ms, counted
 * as idle (returns true); or, idle for batchflow.worker_idle_timeout, it
 * stops counting as idle and must look once more (returns false), and if
 * that last look finds nothing either it exits here.
 */
bool
bf_worker_db_idle_begin(long *sleep_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		may_leave = bf_every_database() && bf_worker_idle_timeout_ms > 0 &&
		*sleep_ms >= bf_poll_interval_ms;

	if (leaving)
	{
		/* The last look found nothing either. */
		if (may_leave)
			proc_exit(0);
		leaving = false;
	}
	if (idle_since == 0)
		idle_since = now;
	if (may_leave)
	{
		long		left = bf_worker_idle_timeout_ms -
			TimestampDifferenceMilliseconds(idle_since, now);

		if (left <= 0)
		{
			leaving = true;
			return false;
		}
		*sleep_ms = Min(*sleep_ms, left);
	}
	bf_db_worker_set_idle(true);
	return true;
}

/* The worker woke up: it no longer counts as idle. */
void
bf_worker_db_idle_end(void)
{
	bf_db_worker_set_idle(false);
}
