/*-------------------------------------------------------------------------
 *
 * deps.h
 *	  Dependencies between the items of a loop ("dependsOn", deps.c):
 *	  validation at registration, and the bookkeeping when an item ends.
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

extern void bf_check_depends_on(JsonbContainer *node, const char *what);
extern void bf_deps_item_succeeded(int64 loop_ref, int32 idx);
extern int64 bf_deps_item_failed(int64 loop_ref, int32 idx);

#endif							/* BATCHFLOW_DEPS_H */
