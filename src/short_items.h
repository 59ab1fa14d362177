/*-------------------------------------------------------------------------
 *
 * short_items.h
 *	  Batching short items: the next item of the held loop, into the same
 *	  transaction (short_items.c).
 *
 * IDENTIFICATION
 *	  src/short_items.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_SHORT_ITEMS_H
#define BATCHFLOW_SHORT_ITEMS_H

#include "postgres.h"

#include "claim.h"

extern bool bf_claim_short_next(BfClaim *claim);

#endif							/* BATCHFLOW_SHORT_ITEMS_H */
