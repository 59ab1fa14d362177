/*-------------------------------------------------------------------------
 *
 * http_claim.h
 *	  Claiming many items of one HTTP loop in one statement (http_claim.c).
 *
 * IDENTIFICATION
 *	  src/http_claim.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_HTTP_CLAIM_H
#define BATCHFLOW_HTTP_CLAIM_H

#include "postgres.h"

#include "storage/lock.h"

#include "claim.h"

extern int	bf_http_claim_batch(BfLoopInfo *loop, int want, const LOCKTAG *reuse,
								int nreuse, BfClaim *claims);
extern bool bf_http_claim_pending(const LOCKTAG *tag);
extern void bf_http_claim_reset(void);

#endif							/* BATCHFLOW_HTTP_CLAIM_H */
