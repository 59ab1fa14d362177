/*-------------------------------------------------------------------------
 *
 * counter_rebuild.h
 *	  The launcher rebuilds progress counters (counter_rebuild.c).
 *
 * IDENTIFICATION
 *	  src/counter_rebuild.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_COUNTER_REBUILD_H
#define BATCHFLOW_COUNTER_REBUILD_H

#include "postgres.h"

extern void bf_counter_rebuild_sweep(bool force_all);

#endif							/* BATCHFLOW_COUNTER_REBUILD_H */
