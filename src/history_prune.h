/*-------------------------------------------------------------------------
 *
 * history_prune.h
 *	  The launcher prunes the items of old runs (history_prune.c).
 *
 * IDENTIFICATION
 *	  src/history_prune.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_HISTORY_PRUNE_H
#define BATCHFLOW_HISTORY_PRUNE_H

#include "postgres.h"

extern void bf_history_prune_sweep(void);

#endif							/* BATCHFLOW_HISTORY_PRUNE_H */
