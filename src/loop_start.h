/*-------------------------------------------------------------------------
 *
 * loop_start.h
 *	  Moving a run to its next top-level node: creating that node's loop
 *	  and items, or finishing the run (loop_start.c).
 *
 * IDENTIFICATION
 *	  src/loop_start.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_LOOP_START_H
#define BATCHFLOW_LOOP_START_H

#include "postgres.h"

extern void bf_advance(int64 run_id, int32 from, bool new_run);

#endif							/* BATCHFLOW_LOOP_START_H */
