/*-------------------------------------------------------------------------
 *
 * databases.h
 *	  Which databases the worker pool serves, and which database each
 *	  worker slot is lent to (databases.c); the launcher's share-out of
 *	  the pool among them (launcher_db.c).
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

/* Why a database is not served (bf_database_served). */
typedef enum BfUnserved
{
	BF_SERVED = 0,
	BF_UNSERVED_NOT_PRELOADED,	/* no pool at all */
	BF_UNSERVED_OTHER_DATABASE, /* batchflow.database_name names another */
	BF_UNSERVED_TEMPLATE		/* template databases are never served */
} BfUnserved;

extern int	bf_worker_idle_timeout_ms;
extern void bf_databases_define_gucs(void);
extern bool bf_every_database(void);

/* Shared memory (from the hooks in batchflow.c). */
extern Size bf_databases_shmem_size(void);
extern void bf_databases_shmem_request(void);
extern void bf_databases_shmem_startup(void);

/* Any backend. */
extern BfUnserved bf_database_served(void);
extern void bf_warn_if_unserved(const char *what);
extern void bf_error_if_unserved(int64 run_id);
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

/* The launcher's view of one slot and its orders (launcher_db.c). */
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
