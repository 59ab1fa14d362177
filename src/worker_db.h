/*-------------------------------------------------------------------------
 *
 * worker_db.h
 *	  What an item worker does about the database it serves
 *	  (worker_db.c).
 *
 * IDENTIFICATION
 *	  src/worker_db.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_WORKER_DB_H
#define BATCHFLOW_WORKER_DB_H

#include "postgres.h"

extern void bf_worker_db_connect(int slotno);
extern bool bf_worker_db_ready(long *sleep_ms);
extern void bf_worker_db_claimed(void);
extern bool bf_worker_db_idle_begin(long *sleep_ms);
extern void bf_worker_db_idle_end(void);

#endif							/* BATCHFLOW_WORKER_DB_H */
