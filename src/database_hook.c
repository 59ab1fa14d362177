/*-------------------------------------------------------------------------
 *
 * database_hook.c
 *	  Commands that need a database without connections get it.
 *
 *	  DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ...
 *	  TEMPLATE fail while another session is connected to the database.
 *	  Item workers of that database are such sessions; serving every
 *	  database, idle ones leave on their own after
 *	  batchflow.worker_idle_timeout, but busy ones stay.  So, before the
 *	  command runs, a ProcessUtility hook asks the database's workers to
 *	  hand their slots back (after their current transaction), keeps new
 *	  ones away for a few seconds, and waits (up to five seconds) for them
 *	  to be gone; the database's announcer (announcer.c) likewise.  Only
 *	  the database's owner or a superuser can do this,
 *	  the same roles that may run the command.
 *
 * IDENTIFICATION
 *	  src/database_hook.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "batchflow.h"
#include "announce_sender.h"
#include "databases.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

static void bf_process_utility(PlannedStmt *pstmt, const char *queryString,
							   bool readOnlyTree, ProcessUtilityContext context,
							   ParamListInfo params, QueryEnvironment *queryEnv,
							   DestReceiver *dest, QueryCompletion *qc);
static const char *bf_database_needed_alone(Node *stmt);

/* Install the hook (from _PG_init, when preloaded). */
void
bf_database_hook_install(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = bf_process_utility;
}

/* The database a command needs without connections, or NULL. */
static const char *
bf_database_needed_alone(Node *stmt)
{
	ListCell   *lc;

	if (IsA(stmt, DropdbStmt))
		return ((DropdbStmt *) stmt)->dbname;
	if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		return ((RenameStmt *) stmt)->subname;
	if (IsA(stmt, CreatedbStmt))
	{
		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *opt = (DefElem *) lfirst(lc);

			if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
				return defGetString(opt);
		}
	}
	return NULL;
}

/* Clear the database of batchflow workers first, then run the command. */
static void
bf_process_utility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	const char *dbname = bf_database_needed_alone(pstmt->utilityStmt);

	if (dbname != NULL)
	{
		Oid			dboid = get_database_oid(dbname, true);

		if (OidIsValid(dboid) && dboid != MyDatabaseId &&
			pg_database_ownercheck(dboid, GetUserId()))
		{
			bf_db_release(dboid);
			bf_announce_release(dboid);
		}
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}
