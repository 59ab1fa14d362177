/*-------------------------------------------------------------------------
 *
 * databases.h
 *	  Which databases the worker pool serves, and which database each
 *	  worker slot is lent to (databases.c).  Whether the current database
 *	  is served at all: db_served.h; the share-out policy: db_shareout.h.
 *
 * IDENTIFICATION
 *	  src/databases.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_DATABASES_H
#define BATCHFLOW_DATABASES_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"

/* Databases that can have workers at the same time. */
#define BF_MAX_DATABASES	128

extern int	bf_worker_idle_timeout_ms;
extern void bf_databases_define_gucs(void);

/* Shared memory (from the hooks in batchflow.c). */
extern Size bf_databases_shmem_size(void);
extern void bf_databases_shmem_request(void);
extern void bf_databases_shmem_startup(void);

/* Any backend. */
extern bool bf_databases_attached(void);
extern bool bf_every_database(void);
extern void bf_db_register(Oid dboid, bool fresh);
extern void bf_db_register_on_commit(void);
extern void bf_db_note_work(Oid dboid);
extern bool bf_db_slot_serves(int slotno, Oid dboid);
extern void bf_db_set_launcher(Latch *latch);
extern void bf_db_set_only(Oid dboid);
extern void bf_db_release(Oid dboid);

/* database_hook.c */
extern void bf_database_hook_install(void);

/* An item worker, about its own slot and database. */
extern void bf_db_worker_attach(int slotno, Oid dboid);
extern void bf_db_worker_set_idle(bool idle);
extern bool bf_db_worker_exit_requested(void);
extern bool bf_db_worker_recovery(bool *mine);
extern void bf_db_worker_recovered(void);
extern bool bf_db_worker_sweep_due(int interval_ms);
extern void bf_db_worker_more_work(void);
extern void bf_db_worker_leave(bool block);

/* A slot to start a worker for, lent to its database (launcher.c). */
typedef struct BfStartOrder
{
	int			slotno;
	Oid			dboid;
} BfStartOrder;

extern int	bf_db_balance(const bool *alive, BfStartOrder *orders, bool keep_full);
extern void bf_db_slot_released(int slotno);
extern void bf_db_forget(Oid dboid);
extern int	bf_db_list(Oid *oids, int max);

#endif							/* BATCHFLOW_DATABASES_H */
