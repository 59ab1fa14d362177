/*-------------------------------------------------------------------------
 *
 * wake_commit.h
 *	  Waking workers and bf_wait sleepers when the current transaction
 *	  commits (wake_commit.c), or at once (bf_wake_workers).
 *
 * IDENTIFICATION
 *	  src/wake_commit.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_WAKE_COMMIT_H
#define BATCHFLOW_WAKE_COMMIT_H

#include "postgres.h"

extern void bf_wake_workers(void);
extern void bf_wake_on_commit(void);
extern void bf_wake_lead_on_commit(void);
extern void bf_wake_workers_on_commit(int n);
extern void bf_runs_finished_on_commit(void);

#endif							/* BATCHFLOW_WAKE_COMMIT_H */
