/*-------------------------------------------------------------------------
 *
 * run.h
 *	  Closing loops, advancing runs and recovery (run.c).
 *
 * IDENTIFICATION
 *	  src/run.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_RUN_H
#define BATCHFLOW_RUN_H

#include "postgres.h"

extern bool bf_loop_try_close(int64 loop_ref, bool wait, bool *busy);
extern bool bf_loop_close_if_done(int64 loop_ref);
extern void bf_requeue_orphans(void);
extern int64 *bf_loops_to_close(MemoryContext cxt, int *n);

#endif							/* BATCHFLOW_RUN_H */
