/*-------------------------------------------------------------------------
 *
 * pool.h
 *	  The worker pool's shared memory (pool.c): one worker slot per item
 *	  worker (who serves it, in which database, its latch, what it executes
 *	  right now), and the condition variable bf_wait sleeps on.
 *	  Only pool.c touches the structure; everyone else copies a slot out
 *	  with bf_pool_read.
 *
 * IDENTIFICATION
 *	  src/pool.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_POOL_H
#define BATCHFLOW_POOL_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/condition_variable.h"

/* A copy of one worker slot, taken under its lock. */
typedef struct BfWorkerView
{
	pid_t		pid;			/* 0: no worker serves the slot */
	int64		run_id;			/* item being executed, or 0 */
	int64		loop_ref;
	int32		idx;			/* -1: an HTTP batch */
	TimestampTz started_at;
	int32		nactive;		/* items executing (an HTTP batch has many) */
	TransactionId recorded_xid; /* gave the item shown its result, or invalid */
	Oid			dboid;			/* the database the worker serves */
} BfWorkerView;

extern Size bf_pool_shmem_size(void);
extern void bf_pool_shmem_startup(void);
extern bool bf_pool_exists(void);
extern int	bf_pool_nslots(void);
extern bool bf_pool_read(int slotno, BfWorkerView *view);
extern bool bf_pool_read_here(int slotno, BfWorkerView *view);
extern int	bf_pool_my_slot(void);

/* The item worker's own slot (worker.c, http_batch.c). */
extern void bf_pool_attach(int slotno);
extern void bf_pool_set_database(Oid dboid);
extern void bf_pool_publish_item(int64 run_id, int64 loop_ref, int32 idx,
								 TimestampTz started_at);
extern void bf_pool_publish_batch(int64 run_id, int64 loop_ref, int nactive);
extern void bf_pool_publish_idle(void);
extern void bf_pool_publish_recorded(void);
extern bool bf_pool_view_recorded(const BfWorkerView *view);

/* The condition variable bf_wait sleeps on (broadcast by wake_commit.c). */
extern ConditionVariable *bf_pool_run_done_cv(void);

#endif							/* BATCHFLOW_POOL_H */
