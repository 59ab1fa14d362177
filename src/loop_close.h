/*-------------------------------------------------------------------------
 *
 * loop_close.h
 *	  Closing a loop whose items have all ended, and moving its run on
 *	  (loop_close.c).
 *
 * IDENTIFICATION
 *	  src/loop_close.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_LOOP_CLOSE_H
#define BATCHFLOW_LOOP_CLOSE_H

#include "postgres.h"

/* How long a worker waits before it tries a busy loop again (worker.c). */
#define BF_CLOSE_RETRY_MS 50

extern bool bf_close_loop(int64 loop_ref, bool wait, bool *busy);

#endif							/* BATCHFLOW_LOOP_CLOSE_H */
