/*-------------------------------------------------------------------------
 *
 * item_result.h
 *	  The outcome of an attempt (activity_sql.c and activity_http.c fill
 *	  it) and its recording in the claim's transaction (item_result.c).
 *
 * IDENTIFICATION
 *	  src/item_result.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ITEM_RESULT_H
#define BATCHFLOW_ITEM_RESULT_H

#include "postgres.h"

#include "utils/resowner.h"

#include "batchflow.h"
#include "claim.h"

typedef struct BfItemResult
{
	bool		ok;
	Datum		output;			/* jsonb of the last child, when ok */
	bool		output_isnull;
	char	   *error;			/* when !ok */
	char	   *sqlstate;
	char	   *failed_child;
	bool		fatal;			/* fail the loop at once, whatever its strategy */
	long		retry_after_ms; /* HTTP Retry-After: earliest retry, or 0 */
	bool		cancelled;		/* interrupted by bf_cancel(force => true) */
} BfItemResult;

extern BfOutcome bf_record_result(BfClaim *claim, BfItemResult *result);
extern void bf_result_from_error(BfItemResult *result, MemoryContext oldcxt,
								 ResourceOwner oldowner, const char *failed_child);

#endif							/* BATCHFLOW_ITEM_RESULT_H */
