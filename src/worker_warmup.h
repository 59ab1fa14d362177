/*-------------------------------------------------------------------------
 *
 * worker_warmup.h
 *	  A new item worker's rehearsal of a claim and a loop's close
 *	  (worker_warmup.c).
 *
 * IDENTIFICATION
 *	  src/worker_warmup.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_WORKER_WARMUP_H
#define BATCHFLOW_WORKER_WARMUP_H

#include "postgres.h"

extern bool bf_worker_warm_up(void);

#endif							/* BATCHFLOW_WORKER_WARMUP_H */
