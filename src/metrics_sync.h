/*-------------------------------------------------------------------------
 *
 * metrics_sync.h
 *	  Counting a loop into the metric counters when it closes or is
 *	  re-opened, and which counter row a session adds to (metrics_sync.c).
 *
 * IDENTIFICATION
 *	  src/metrics_sync.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_METRICS_SYNC_H
#define BATCHFLOW_METRICS_SYNC_H

#include "postgres.h"

extern int	bf_metric_shard(void);
extern void bf_metrics_sync(int64 loop_ref);

#endif							/* BATCHFLOW_METRICS_SYNC_H */
