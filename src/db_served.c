/*-------------------------------------------------------------------------
 *
 * db_served.c
 *	  Is the current database served by the worker pool, and what a user
 *	  is told when it is not.
 *
 *	  A database is served when batchflow is preloaded (the pool exists),
 *	  it is not a template (workers never connect to one: they would keep
 *	  CREATE DATABASE ... TEMPLATE from copying it), and, if
 *	  batchflow.database_name names one database, it is that one.  The
 *	  answer depends only on settings and the catalog, never on shared
 *	  state, so any backend may ask at any time without a lock.  This file
 *	  sits above databases.c: it asks whether the pool's shared memory is
 *	  there and whether it serves every database (bf_databases_attached,
 *	  bf_every_database), and registers a served database at commit
 *	  (bf_db_register_on_commit); databases.c never calls back here.
 *
 *	  bf_start warns (55000) when no worker will execute the run it
 *	  starts; bf_wait fails at once (55000) instead of waiting out its
 *	  timeout; the install and upgrade scripts register a served database
 *	  at commit (batchflow._database_ready) and warn in any other.
 *
 * IDENTIFICATION
 *	  src/db_served.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/syscache.h"

#include "batchflow.h"
#include "databases.h"
#include "db_served.h"

PG_FUNCTION_INFO_V1(bf_sql_database_ready);

/* Is the current database served by the pool, and if not, why? */
BfUnserved
bf_database_served(void)
{
	HeapTuple	tuple;
	bool		is_template = false;

	if (!bf_databases_attached())
		return BF_UNSERVED_NOT_PRELOADED;
	if (!bf_every_database())
	{
		char	   *name = get_database_name(MyDatabaseId);

		return (name != NULL && strcmp(name, bf_database_name) == 0)
			? BF_SERVED : BF_UNSERVED_OTHER_DATABASE;
	}
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));
	if (HeapTupleIsValid(tuple))
	{
		is_template = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
		ReleaseSysCache(tuple);
	}
	return is_template ? BF_UNSERVED_TEMPLATE : BF_SERVED;
}

/* WARNING (55000) that runs started here will not be executed, if so. */
void
bf_warn_if_unserved(const char *what)
{
	BfUnserved why = bf_database_served();
	char	   *db = get_database_name(MyDatabaseId);

	if (why == BF_UNSERVED_OTHER_DATABASE)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no batchflow worker serves database \"%s\"", db),
				 errdetail("batchflow.database_name is \"%s\": the workers execute the runs of that database only; %s here will not be executed.",
						   bf_database_name, what),
				 errhint("Run CREATE EXTENSION batchflow and bf_start in database \"%s\", or set batchflow.database_name = '' in postgresql.conf and restart the server to serve every database.",
						 bf_database_name)));
	else if (why == BF_UNSERVED_TEMPLATE)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no batchflow worker serves database \"%s\"", db),
				 errdetail("\"%s\" is a template database, which workers never connect to; %s here will not be executed.",
						   db, what),
				 errhint("Run CREATE EXTENSION batchflow and bf_start in an ordinary database; databases created from this template are served.")));
}

/*
 * bf_wait of an unfinished run: ERROR (55000) at once if no worker serves
 * this database, rather than waiting out the timeout.
 */
void
bf_error_if_unserved(int64 run_id)
{
	BfUnserved why = bf_database_served();
	char	   *db = get_database_name(MyDatabaseId);

	if (why == BF_UNSERVED_NOT_PRELOADED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " cannot finish: batchflow is not loaded through shared_preload_libraries", run_id),
				 errdetail("No background worker executes items in this server."),
				 errhint("Add 'batchflow' to shared_preload_libraries in postgresql.conf and restart the server.")));
	if (why == BF_UNSERVED_OTHER_DATABASE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " cannot finish: no batchflow worker serves database \"%s\"", run_id, db),
				 errdetail("batchflow.database_name is \"%s\": the workers execute the runs of that database only.",
						   bf_database_name),
				 errhint("Run CREATE EXTENSION batchflow and bf_start in database \"%s\", or set batchflow.database_name = '' in postgresql.conf and restart the server to serve every database.",
						 bf_database_name)));
	if (why == BF_UNSERVED_TEMPLATE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run " INT64_FORMAT " cannot finish: no batchflow worker serves database \"%s\"", run_id, db),
				 errdetail("\"%s\" is a template database, which workers never connect to.", db),
				 errhint("Run CREATE EXTENSION batchflow and bf_start in an ordinary database; databases created from this template are served.")));
}

/*
 * batchflow._database_ready() returns void: called by the install and
 * upgrade scripts.  In a served database (and only there), the workers are
 * told when the transaction commits; elsewhere, a WARNING says that no worker will
 * execute the runs started here.
 */
Datum
bf_sql_database_ready(PG_FUNCTION_ARGS)
{
	if (bf_database_served() == BF_SERVED)
		bf_db_register_on_commit();
	else
		bf_warn_if_unserved("runs started");
	PG_RETURN_VOID();
}
