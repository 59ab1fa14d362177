/*-------------------------------------------------------------------------
 *
 * claim_hint.c
 *	  Where to start looking in a parallel loop: this worker's claim hints.
 *
 *	  Items are claimed in index order, so everything below the last index
 *	  this worker claimed is almost always finished or executing; scanning
 *	  from index 0 every time would walk over all of them (and over their
 *	  dead index entries until vacuum), which gets slower as a big loop
 *	  progresses.  claim.c starts its scan at the hint, and every
 *	  BF_FULL_SCAN_EVERY-th claim, and whenever nothing is found above the
 *	  hint, at 0 again, so a retried or re-queued item with a low index is
 *	  not left behind.  deps_ready.c lowers the hint to an item it makes
 *	  ready.
 *
 *	  The hints are per backend (no shared memory, no locks).  Direct-mapped
 *	  by loop id; a collision just loses a hint.
 *
 * IDENTIFICATION
 *	  src/claim_hint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "claim_hint.h"

#define BF_CLAIM_HINTS 64

static BfClaimHint claim_hints[BF_CLAIM_HINTS];

/*
 * The hint of loop loop_ref; a slot that held another loop's hint starts
 * over at index 0.
 */
BfClaimHint *
bf_claim_hint(int64 loop_ref)
{
	BfClaimHint *hint = &claim_hints[(uint64) loop_ref % BF_CLAIM_HINTS];

	if (hint->loop_ref != loop_ref)
	{
		hint->loop_ref = loop_ref;
		hint->next = 0;
		hint->claims = 0;
	}
	return hint;
}

/*
 * An item of loop_ref with index idx just became ready (dependsOn, in this
 * worker's transaction): start this worker's next claim there, so that
 * ready items are taken in index order.
 */
void
bf_claim_hint_lower(int64 loop_ref, int32 idx)
{
	BfClaimHint *hint = &claim_hints[(uint64) loop_ref % BF_CLAIM_HINTS];

	if (hint->loop_ref == loop_ref && idx < hint->next)
		hint->next = idx;
}
