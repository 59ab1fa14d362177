/*-------------------------------------------------------------------------
 *
 * claim_hint.h
 *	  Where a worker's next claim in a parallel loop starts (claim_hint.c).
 *	  Below claim.c, which reads and advances the hints, and deps_ready.c,
 *	  which lowers them when it makes items ready.
 *
 * IDENTIFICATION
 *	  src/claim_hint.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_CLAIM_HINT_H
#define BATCHFLOW_CLAIM_HINT_H

#include "postgres.h"

/* One loop's hint: claim from index "next" first. */
typedef struct BfClaimHint
{
	int64		loop_ref;
	int32		next;			/* claim from this index first */
	uint32		claims;
} BfClaimHint;

/* claim_hint.c */
extern BfClaimHint *bf_claim_hint(int64 loop_ref);
extern void bf_claim_hint_lower(int64 loop_ref, int32 idx);

#endif							/* BATCHFLOW_CLAIM_HINT_H */
