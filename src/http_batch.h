/*-------------------------------------------------------------------------
 *
 * http_batch.h
 *	  A worker driving many HTTP items at once (http_batch.c).
 *
 * IDENTIFICATION
 *	  src/http_batch.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_HTTP_BATCH_H
#define BATCHFLOW_HTTP_BATCH_H

#include "postgres.h"

#include "claim.h"

extern void bf_http_take(BfClaim *claim);
extern void bf_http_drive(void);
extern void bf_http_abandon(void);
extern void bf_http_requeue_mine(void);

#endif							/* BATCHFLOW_HTTP_BATCH_H */
