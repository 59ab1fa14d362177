/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The item worker's entry point (worker.c).
 *
 * IDENTIFICATION
 *	  src/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_WORKER_H
#define BATCHFLOW_WORKER_H

#include "postgres.h"

extern PGDLLEXPORT void bf_worker_main(Datum main_arg);

#endif							/* BATCHFLOW_WORKER_H */
