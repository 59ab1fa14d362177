/*-------------------------------------------------------------------------
 *
 * deps.h
 *	  Dependencies between the items of a loop ("dependsOn", deps.c):
 *	  validation at registration and the graph at loop start; the
 *	  bookkeeping when an item ends (deps_ready.c); claiming a ready item
 *	  (deps_claim.c).
 *
 * IDENTIFICATION
 *	  src/deps.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_DEPS_H
#define BATCHFLOW_DEPS_H

#include "postgres.h"

#include "utils/jsonb.h"

/* deps.c */
extern void bf_check_depends_on(JsonbContainer *node, const char *what);

/* deps_ready.c */
extern void bf_deps_item_succeeded(int64 loop_ref, int32 idx);
extern int64 bf_deps_item_failed(int64 loop_ref, int32 idx);

/* deps_claim.c */
extern bool bf_deps_claim_ready(int64 loop_ref, int32 from, bool check_loop);
extern int	bf_deps_plan_guard_begin(void);

#endif							/* BATCHFLOW_DEPS_H */
