/*-------------------------------------------------------------------------
 *
 * activity_workflow.h
 *	  The workflow activity (activity_workflow.c): an item whose work is a
 *	  child run of another workflow.
 *
 * IDENTIFICATION
 *	  src/activity_workflow.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ACTIVITY_WORKFLOW_H
#define BATCHFLOW_ACTIVITY_WORKFLOW_H

#include "postgres.h"

#include "utils/jsonb.h"

#include "claim.h"

extern void bf_check_workflow_activity(JsonbContainer *node, const char *what);
extern void bf_check_loop_workflow_child(JsonbContainer *children, const char *what);
extern bool bf_children_room(int64 loop_ref, int cap);
extern void bf_workflow_take(BfClaim *claim);

#endif							/* BATCHFLOW_ACTIVITY_WORKFLOW_H */
