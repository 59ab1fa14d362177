/*-------------------------------------------------------------------------
 *
 * activity_sql.h
 *	  Running an item's SQL children (activity_sql.c).
 *
 * IDENTIFICATION
 *	  src/activity_sql.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ACTIVITY_SQL_H
#define BATCHFLOW_ACTIVITY_SQL_H

#include "postgres.h"

#include "claim.h"
#include "item_result.h"

extern void bf_execute_item(BfClaim *claim, BfItemResult *result);
extern void bf_execute_children(BfClaim *claim, int first, int stop,
								Datum prev, bool prev_isnull,
								BfItemResult *result);
extern Datum bf_first_column_as_jsonb(bool *isnull);

#endif							/* BATCHFLOW_ACTIVITY_SQL_H */
