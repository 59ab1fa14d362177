/*-------------------------------------------------------------------------
 *
 * api.h
 *	  Run control (api.c) as other modules call it: bf_retry of a child run
 *	  by the workflow activity, with the caller's identity and checks.
 *
 * IDENTIFICATION
 *	  src/api.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_API_H
#define BATCHFLOW_API_H

#include "postgres.h"

#include "fmgr.h"

extern Datum bf_retry(PG_FUNCTION_ARGS);

#endif							/* BATCHFLOW_API_H */
