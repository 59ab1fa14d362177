/*-------------------------------------------------------------------------
 *
 * security.c
 *	  Who may do what: the role that owns batchflow's bookkeeping, and the
 *	  ownership checks the bf_* functions apply to runs and workflows.
 *
 *	  The bf_* functions run as their caller.  They record the caller as the
 *	  owner of what they create, then switch to the owner of the batchflow
 *	  schema (the role that created the extension) only for the writes to
 *	  batchflow's own tables, much like a SECURITY DEFINER function but
 *	  without losing who the caller was.  While switched, search_path is
 *	  pinned to pg_catalog, pg_temp so that no function or operator of the
 *	  caller's schemas can run with the owner's rights.  An error aborts the
 *	  (sub)transaction, which restores the caller's identity and settings.
 *
 *	  Background workers connect as the bootstrap superuser.  Their own
 *	  bookkeeping runs with the same pinned search_path; activities run as
 *	  the run's owner in a security-restricted operation with the
 *	  database's default search_path (see bf_become_run_owner).
 *
 * IDENTIFICATION
 *	  src/security.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "batchflow.h"
#include "security.h"

PG_FUNCTION_INFO_V1(bf_sql_visible);

/* Name of the role whose members see and control every run. */
#define BF_ADMIN_ROLE_NAME "batchflow_admin"

/* The search_path of every statement run with the extension owner's rights. */
#define BF_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/* A worker's search_path before bf_worker_pin_search_path, for activities. */
static char *bf_default_search_path = NULL;


/*
 * Run sql (the run's row: owner, status, ... with the run's id as $1) and
 * refuse if the run does not exist or "caller" may not act on it; the row
 * is left in SPI_tuptable.  Returns the owner.
 */
static Oid
bf_run_lookup(int64 run_id, Oid caller, const char *sql)
{
	Datum		arg = Int64GetDatum(run_id);
	Oid			argtype = INT8OID;
	bool		isnull;
	Oid			owner;

	if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up run " INT64_FORMAT, run_id);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run " INT64_FORMAT " does not exist", run_id),
				 errhint("The runs you can see are listed in the batchflow.runs view.")));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	bf_check_run_access(run_id, owner, caller);
	return owner;
}

/*
 * Look up a run's owner (and, when asked, its status and whether the
 * current transaction created it), and refuse if it does not exist or
 * "caller" may not act on it.  The one lookup of bf_wait, bf_cancel,
 * bf_retry, bf_progress, bf_report and bf_summary.  Must be called inside
 * SPI, as the extension owner: the check is made for the caller, not for
 * the current user.
 */
Oid
bf_run_checked(int64 run_id, Oid caller, char **status, bool *started_here)
{
	bool		isnull;
	Oid			owner;

	owner = bf_run_lookup(run_id, caller,
						  "SELECT owner, status, xmin FROM batchflow.run WHERE id = $1");
	if (status)
		*status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	if (started_here)
		*started_here = TransactionIdIsCurrentTransactionId(
			DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 3, &isnull)));
	return owner;
}

/*
 * The same check for bf_pause, bf_resume and bf_purge, which change the
 * run: its row is locked first (FOR NO KEY UPDATE).  Returns its status.
 */
char *
bf_run_lock_checked(int64 run_id, Oid caller)
{
	(void) bf_run_lookup(run_id, caller,
						 "SELECT owner, status FROM batchflow.run WHERE id = $1"
						 " FOR NO KEY UPDATE");
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
}

/* The owner of schema batchflow: the role batchflow's bookkeeping runs as. */
Oid
bf_admin_role(void)
{
	Oid			nspid = get_namespace_oid("batchflow", false);
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nspid);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * May "role" see and control objects owned by "owner"?  Yes for the owner
 * itself and roles that have its privileges, for superusers, and for
 * members of batchflow_admin.  A dropped owner is managed by admins only.
 */
bool
bf_role_can_manage(Oid role, Oid owner)
{
	Oid			admin;

	if (superuser_arg(role))
		return true;
	if (OidIsValid(owner) &&
		SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)) &&
		has_privs_of_role(role, owner))
		return true;
	admin = get_role_oid(BF_ADMIN_ROLE_NAME, true);
	return OidIsValid(admin) && has_privs_of_role(role, admin);
}

/* May the current user see and control objects owned by "owner"? */
bool
bf_can_manage(Oid owner)
{
	return bf_role_can_manage(GetUserId(), owner);
}

/*
 * Refuse, with SQLSTATE 42501, to let "role" act on run "run_id" owned by
 * "owner".  The helper every bf_* function that takes a run id calls.
 */
void
bf_check_run_access(int64 run_id, Oid owner, Oid role)
{
	if (!bf_role_can_manage(role, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for run " INT64_FORMAT, run_id),
				 errdetail("The run was started by another role."),
				 errhint("Only the role that started a run, roles that have its privileges, superusers and members of batchflow_admin may see or act on it.")));
}

/* Set search_path to BF_SAFE_SEARCH_PATH at the current GUC nest level. */
void
bf_pin_search_path(void)
{
	(void) set_config_option("search_path", BF_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

/*
 * Switch to the bookkeeping role with a pinned search_path; the caller's
 * identity and settings are saved in *saved.
 */
void
bf_become_admin(BfSavedUser *saved)
{
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(bf_admin_role(),
						   saved->sec_context | SECURITY_LOCAL_USERID_CHANGE);
	saved->nestlevel = NewGUCNestLevel();
	bf_pin_search_path();
}

/* Switch back to the identity and settings saved by bf_become_admin. */
void
bf_restore_user(const BfSavedUser *saved)
{
	AtEOXact_GUC(true, saved->nestlevel);
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/*
 * For a background worker, once connected: remember the database's default
 * search_path for activities, then pin the worker's own to a safe one, so
 * that its bookkeeping, run as a superuser, never resolves a name in a
 * schema an ordinary role can create objects in.
 */
void
bf_worker_pin_search_path(void)
{
	bf_default_search_path = MemoryContextStrdup(TopMemoryContext,
												 GetConfigOption("search_path", false, false));
	SetConfigOption("search_path", BF_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_SESSION);
}

/*
 * Switch a worker to the run's owner for an activity: the owner's rights,
 * in a security-restricted operation (no temporary objects, cursors WITH
 * HOLD or role changes that could outlive the item in this shared session
 * and be met by another role's items), with the database's default
 * search_path, at a new GUC nest level so that every SET the activity makes
 * is undone.  The caller's identity is saved in *saved; undo with
 * bf_restore_after_activity.  Refuses an owner that no longer exists.
 */
void
bf_become_run_owner(Oid owner, int64 run_id, BfSavedUser *saved)
{
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u that started run " INT64_FORMAT " no longer exists",
						owner, run_id),
				 errdetail("Activities run only as the role that started the run."),
				 errhint("Start the workflow again as an existing role.")));

	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(owner, saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	saved->nestlevel = NewGUCNestLevel();
	if (bf_default_search_path != NULL)
		(void) set_config_option("search_path", bf_default_search_path,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
}

/*
 * Switch back from bf_become_run_owner: every setting the activity changed,
 * SET or SET LOCAL, is undone, then the worker's identity is restored.
 */
void
bf_restore_after_activity(const BfSavedUser *saved)
{
	AtEOXact_GUC(false, saved->nestlevel);
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/*
 * batchflow.visible(owner oid) returns boolean: may the current user see
 * objects owned by "owner"?  Used by the row-level security policies and
 * the views.
 */
Datum
bf_sql_visible(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(bf_can_manage(PG_GETARG_OID(0)));
}
