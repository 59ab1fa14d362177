/*-------------------------------------------------------------------------
 *
 * launcher_db.c
 *	  The launcher finds the databases to serve.
 *
 *	  The launcher is connected to no database, so it reads the shared
 *	  catalog pg_database.  With batchflow.database_name empty (the
 *	  default) every database that accepts connections and is not a
 *	  template is a candidate: the launcher registers each one it has not
 *	  seen before (databases.c), which lends it one worker; that worker
 *	  finds out whether the extension is installed there and leaves if it
 *	  is not.  Databases that are dropped are forgotten.  A database where
 *	  CREATE EXTENSION batchflow commits registers itself at once, so the
 *	  scan (every two seconds) only matters for databases created as a copy
 *	  of a template that has the extension, and after a start.
 *
 *	  With batchflow.database_name set, only that database is registered.
 *
 * IDENTIFICATION
 *	  src/launcher_db.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "databases.h"
#include "launcher.h"

/* How often the launcher reads pg_database. */
#define BF_DATABASE_SCAN_MS 2000

/* Databases seen by the last scan (launcher's memory). */
static Oid *seen = NULL;
static int	nseen = 0;
static TimestampTz last_scan = 0;
static bool named_registered = false;

static bool bf_oid_in(Oid oid, const Oid *oids, int n);
static Oid	bf_named_database_oid(void);

/* Is oid among oids[0..n)? */
static bool
bf_oid_in(Oid oid, const Oid *oids, int n)
{
	for (int i = 0; i < n; i++)
		if (oids[i] == oid)
			return true;
	return false;
}

/*
 * The oid of the database batchflow.database_name names, or InvalidOid
 * (inside a transaction).  Read by a heap scan of pg_database, like the
 * scan of every database, not through the syscache: a process connected to
 * no database cannot build the relcache entry of pg_database's indexes
 * while the shared relcache init file does not exist yet (the first start
 * after initdb), and get_database_oid failed there with FATAL "cannot read
 * pg_class without having selected a database"; the launcher then served
 * nothing until the postmaster restarted it 5 seconds later.
 */
static Oid
bf_named_database_oid(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	Oid			oid = InvalidOid;

	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (strcmp(NameStr(db->datname), bf_database_name) == 0)
		{
			oid = db->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	return oid;
}

/* Register the databases to serve that are new since the last look. */
void
bf_launcher_find_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	Oid		   *current;
	int			ncurrent = 0;
	int			max = 64;
	Oid			known[BF_MAX_DATABASES];
	int			nknown;
	TimestampTz now = GetCurrentTimestamp();

	if (!bf_every_database())
	{
		Oid			oid;

		if (named_registered)
			return;
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		oid = bf_named_database_oid();
		CommitTransactionCommand();
		if (OidIsValid(oid))
		{
			bf_db_set_only(oid);
			bf_db_register(oid, true);
			named_registered = true;
		}
		return;
	}

	if (last_scan != 0 && !TimestampDifferenceExceeds(last_scan, now, BF_DATABASE_SCAN_MS))
		return;
	last_scan = now;

	current = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * max);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (db->datistemplate || !db->datallowconn)
			continue;
		if (ncurrent == max)
		{
			max *= 2;
			current = repalloc(current, sizeof(Oid) * max);
		}
		current[ncurrent++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();

	/*
	 * New databases get a worker, which finds out about the extension (and
	 * recovers the database if it has no entry yet).  A database already
	 * registered, by CREATE EXTENSION say, keeps its recovery as it is.
	 */
	for (int i = 0; i < ncurrent; i++)
		if (!bf_oid_in(current[i], seen, nseen))
			bf_db_register(current[i], false);

	/* Dropped ones are forgotten. */
	nknown = bf_db_list(known, BF_MAX_DATABASES);
	for (int i = 0; i < nknown; i++)
		if (!bf_oid_in(known[i], current, ncurrent))
			bf_db_forget(known[i]);

	if (seen != NULL)
		pfree(seen);
	seen = current;
	nseen = ncurrent;
}
