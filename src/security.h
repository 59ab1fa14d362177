/*-------------------------------------------------------------------------
 *
 * security.h
 *	  Switching to the extension owner for bookkeeping, to a run's owner
 *	  for activities, and the ownership checks on runs (security.c).
 *
 * IDENTIFICATION
 *	  src/security.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_SECURITY_H
#define BATCHFLOW_SECURITY_H

#include "postgres.h"

typedef struct BfSavedUser
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;		/* GUC nest level opened by the switch */
} BfSavedUser;

extern Oid	bf_admin_role(void);
extern bool bf_role_can_manage(Oid role, Oid owner);
extern bool bf_can_manage(Oid owner);
extern void bf_check_run_access(int64 run_id, Oid owner, Oid role);
extern Oid	bf_run_checked(int64 run_id, Oid caller, char **status,
						   bool *started_here);
extern char *bf_run_lock_checked(int64 run_id, Oid caller);
extern void bf_become_admin(BfSavedUser *saved);
extern void bf_restore_user(const BfSavedUser *saved);
extern void bf_pin_search_path(void);
extern void bf_worker_pin_search_path(void);
extern void bf_become_run_owner(Oid owner, int64 run_id, BfSavedUser *saved);
extern void bf_restore_after_activity(const BfSavedUser *saved);

#endif							/* BATCHFLOW_SECURITY_H */
