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
 *	  without losing who the caller was.  An error aborts the transaction,
 *	  which restores the caller's identity.
 *
 * IDENTIFICATION
 *	  src/security.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_namespace.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/syscache.h"

#include "batchflow.h"

/* Name of the role whose members see and control every run. */
#define BF_ADMIN_ROLE_NAME "batchflow_admin"

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
 * May the current user see and control objects owned by "owner"?  Yes for
 * the owner itself and roles that have its privileges, for superusers, and
 * for members of batchflow_admin.  A dropped owner is managed by admins only.
 */
bool
bf_can_manage(Oid owner)
{
	Oid			me = GetUserId();
	Oid			admin;

	if (superuser())
		return true;
	if (OidIsValid(owner) &&
		SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)) &&
		has_privs_of_role(me, owner))
		return true;
	admin = get_role_oid(BF_ADMIN_ROLE_NAME, true);
	return OidIsValid(admin) && has_privs_of_role(me, admin);
}

/* Switch to the bookkeeping role; the caller's identity is saved in *saved. */
void
bf_become_admin(BfSavedUser *saved)
{
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(bf_admin_role(),
						   saved->sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/* Switch back to the identity saved by bf_become_admin. */
void
bf_restore_user(const BfSavedUser *saved)
{
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}
