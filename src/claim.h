/*-------------------------------------------------------------------------
 *
 * claim.h
 *	  Claiming items under a loop's cap (claim.c: choosing a loop and its
 *	  next item).  A claim holds one of the loop's c cap locks.
 *
 * IDENTIFICATION
 *	  src/claim.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_CLAIM_H
#define BATCHFLOW_CLAIM_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/lock.h"

#include "loopcache.h"

typedef struct BfClaim
{
	BfLoopInfo *loop;
	int32		idx;
	int32		attempts;
	Datum		item;			/* jsonb, or 0 when SQL NULL */
	bool		item_isnull;
	TimestampTz started_at;
	LOCKTAG		cap_lock;		/* the loop's cap lock held for this item */
} BfClaim;

#define BF_MAX_CLOSE 64

/* claim.c */
extern bool bf_claim_next_item(BfClaim *claim, TimestampTz *next_due,
							   int64 *close_list, int *nclose);
extern bool bf_claim_for_http(BfLoopInfo *loop, BfClaim *claim);
extern bool bf_take_cap_lock(int64 loop_ref, int cap, LOCKTAG *tag);
extern void bf_claim_rehearse(int64 loop_ref);
extern bool (*bf_cap_lock_is_mine_hook) (const LOCKTAG *tag);

#endif							/* BATCHFLOW_CLAIM_H */
