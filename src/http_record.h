/*-------------------------------------------------------------------------
 *
 * http_record.h
 *	  Recording the successes of one HTTP round in one statement
 *	  (http_record.c).
 *
 * IDENTIFICATION
 *	  src/http_record.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_HTTP_RECORD_H
#define BATCHFLOW_HTTP_RECORD_H

#include "postgres.h"

#include "claim.h"

extern void bf_http_record_successes(BfLoopInfo *loop, BfClaim *const *claims,
									 Datum *outputs, bool *isnull, int n);

#endif							/* BATCHFLOW_HTTP_RECORD_H */
