/*-------------------------------------------------------------------------
 *
 * version_check.c
 *	  The library refuses SQL objects of another version than its own.
 *
 *	  A new release installs a new library and new scripts together, but the
 *	  SQL objects of each database stay at the version they were created or
 *	  last updated to until ALTER EXTENSION batchflow UPDATE runs there.
 *	  Until then the C code may look for tables, columns or functions that
 *	  are not there yet, so the bf_* functions refuse with an error that
 *	  says what to run, and the workers of such a database leave it alone
 *	  (worker_db.c) instead of failing item after item.
 *
 *	  The version is read from pg_extension; a match is remembered for the
 *	  rest of the transaction only, so that ALTER EXTENSION in another
 *	  session is seen at once.
 *
 * IDENTIFICATION
 *	  src/version_check.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "batchflow.h"
#include "version_check.h"

/* The transaction in which the version last matched. */
static LocalTransactionId checked_in = InvalidLocalTransactionId;

/*
 * The version of batchflow installed in this database, or NULL if it is not
 * installed (inside a transaction; palloc'd).
 */
char *
bf_installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("batchflow"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/* ERROR unless the SQL objects here are of the library's version. */
void
bf_check_sql_version(void)
{
	char	   *installed;

	if (checked_in == MyProc->lxid)
		return;
	installed = bf_installed_version();
	if (installed != NULL && strcmp(installed, BF_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batchflow library version %s cannot use the SQL objects of version %s installed in this database",
						BF_VERSION, installed),
				 errdetail("The server loaded a new batchflow library; the database's tables and functions are still those of version %s.",
						   installed),
				 errhint("Run ALTER EXTENSION batchflow UPDATE in this database.")));
	checked_in = MyProc->lxid;
}
