/*-------------------------------------------------------------------------
 *
 * batchflow.h
 *	  Declarations shared by batchflow's source files: GUC variables, the
 *	  shared-memory state of the worker pool, and each file's entry points.
 *
 * IDENTIFICATION
 *	  src/batchflow.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_H
#define BATCHFLOW_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/jsonb.h"

/* GUC bounds, as named constants */
#define BF_DEFAULT_MAX_WORKERS		10
#define BF_MAX_MAX_WORKERS			256
#define BF_DEFAULT_MAX_CONCURRENCY	10
#define BF_MAX_MAX_CONCURRENCY		10000
#define BF_DEFAULT_POLL_MS			1000

/* GUC variables (batchflow.c) */
extern char *bf_database_name;
extern int	bf_max_workers;
extern int	bf_max_concurrency;
extern int	bf_poll_interval_ms;
extern int	bf_retry_delay_ms;

/*
 * One entry per item worker.  The owner writes it under the spinlock;
 * bf_active_items() and the progress views read it.  An entry with pid 0
 * is free.
 */
typedef struct BfWorkerSlot
{
	slock_t		mutex;
	pid_t		pid;
	Latch	   *latch;
	int64		run_id;			/* item being executed, or 0 */
	int64		loop_ref;
	int32		idx;
	TimestampTz started_at;
} BfWorkerSlot;

typedef struct BfShared
{
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	pg_atomic_uint64 work_generation;	/* bumped on every commit of new work */
	ConditionVariable run_done_cv;	/* broadcast when a run finishes */
	int			nslots;
	BfWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} BfShared;

extern BfShared *BfState;

/* shmem.c */
extern void bf_shmem_request(void);
extern void bf_shmem_startup(void);
extern void bf_wake_workers(void);
extern void bf_wake_on_commit(void);
extern void bf_runs_finished_on_commit(void);

/* launcher.c */
extern void bf_register_launcher(void);
extern PGDLLEXPORT void bf_launcher_main(Datum main_arg);

/* worker.c */
extern PGDLLEXPORT void bf_worker_main(Datum main_arg);

/* run.c: advancing runs (shared by bf_start, the workers and bf_retry) */
extern void bf_run_advance(int64 run_id);
extern bool bf_loop_try_close(int64 loop_ref);

/* security.c: switching to the extension owner for bookkeeping */
typedef struct BfSavedUser
{
	Oid			userid;
	int			sec_context;
} BfSavedUser;

extern Oid	bf_admin_role(void);
extern bool bf_can_manage(Oid owner);
extern void bf_become_admin(BfSavedUser *saved);
extern void bf_restore_user(const BfSavedUser *saved);

/*
 * definition.c: parsing and validating workflow definitions.
 * bf_validate_definition ereports ERROR on the first problem found.
 */
extern void bf_validate_definition(Jsonb *definition);

#endif							/* BATCHFLOW_H */
