/*-------------------------------------------------------------------------
 *
 * batchflow.c
 *	  Library load: the GUCs, the shared-memory hooks and the launcher.
 *
 *	  batchflow must be loaded through shared_preload_libraries: only then
 *	  can it reserve shared memory and register its launcher.  Loaded any
 *	  other way (CREATE EXTENSION in a server that does not preload it) the
 *	  SQL functions still work, but no worker runs the items; we say so with
 *	  a warning and a hint.
 *
 * IDENTIFICATION
 *	  src/batchflow.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "batchflow.h"
#include "activity_http.h"
#include "announce.h"
#include "announce_queue.h"
#include "databases.h"
#include "launcher.h"
#include "pool.h"
#include "progress.h"
#include "progress_shared.h"
#include "register.h"
#include "run_limits.h"
#include "wakeup.h"
#include "bigbatch.h"
#include "run_control.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bf_sql_setting);

void		_PG_init(void);

char	   *bf_database_name = NULL;
int			bf_max_workers = BF_DEFAULT_MAX_WORKERS;
int			bf_max_concurrency = BF_DEFAULT_MAX_CONCURRENCY;
int			bf_poll_interval_ms = BF_DEFAULT_POLL_MS;
int			bf_batch_ms = BF_DEFAULT_BATCH_MS;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void bf_shmem_request_hook(void);
static void bf_shmem_startup_hook(void);

/* Module load: declare GUCs, then (when preloaded) shared memory and launcher. */
void
_PG_init(void)
{
	/* Reloadable settings first: they make sense in any backend. */
	DefineCustomIntVariable("batchflow.max_concurrency",
							"Largest per-loop concurrency cap bf_register accepts.",
							NULL,
							&bf_max_concurrency,
							BF_DEFAULT_MAX_CONCURRENCY, 1, BF_MAX_MAX_CONCURRENCY,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.poll_interval",
							"Safety-net interval at which idle workers look for work.",
							"Workers are woken at once when new work commits; this only bounds the delay when a wake-up is missed and the wait for retry backoffs.",
							&bf_poll_interval_ms,
							BF_DEFAULT_POLL_MS, 10, 60000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.batch_time",
							"How long a worker may keep executing short items of one loop in a single transaction.",
							"Items that finish within this time share a commit, which raises throughput for tiny items; each still holds its loop's slot and records its own result. 0 commits every item on its own.",
							&bf_batch_ms,
							BF_DEFAULT_BATCH_MS, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	bf_progress_define_gucs();
	bf_register_define_gucs();
	bf_http_define_gucs();
	bf_limits_define_gucs();
	bf_wakeup_define_gucs();
	bf_announce_define_gucs();
	bf_run_control_define_gucs();

	if (!process_shared_preload_libraries_in_progress)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batchflow is not loaded through shared_preload_libraries"),
				 errdetail("Runs can be registered and started, but no background worker will execute their items."),
				 errhint("Add 'batchflow' to shared_preload_libraries in postgresql.conf and restart the server.")));
		MarkGUCPrefixReserved("batchflow");
		return;
	}

	/* Postmaster-only settings: they size the pool and its shared memory. */
	DefineCustomStringVariable("batchflow.database_name",
							   "The one database whose batchflow runs the workers execute; empty for every database.",
							   "Empty (the default): every database in which the extension is installed is served, from one pool of batchflow.max_workers workers.",
							   &bf_database_name,
							   "",
							   PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.max_workers",
							"Number of item workers in the pool.",
							"Each worker is a background worker process; max_worker_processes must leave room for them and the launcher.",
							&bf_max_workers,
							BF_DEFAULT_MAX_WORKERS, 1, BF_MAX_MAX_WORKERS,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	bf_databases_define_gucs();

	MarkGUCPrefixReserved("batchflow");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = bf_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = bf_shmem_startup_hook;

	bf_throttle_init();
	bf_register_launcher();
	bf_database_hook_install();
}

/* Chain to the previous hook, then reserve batchflow's shared memory. */
static void
bf_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(bf_pool_shmem_size());
	RequestAddinShmemSpace(bf_cancel_shmem_size());
	bf_progress_shmem_request();
	bf_wakeup_shmem_request();
	bf_databases_shmem_request();
	bf_announce_shmem_request();
}

/* Chain to the previous hook, then attach to (or create) batchflow's state. */
static void
bf_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	bf_pool_shmem_startup();
	bf_cancel_shmem_startup();
	bf_progress_shmem_startup();
	bf_wakeup_shmem_startup();
	bf_databases_shmem_startup();
	bf_announce_shmem_startup();
}

/*
 * batchflow._setting(name text) returns text: the current value of a
 * batchflow setting, with its unit.  SQL reads the settings through it
 * rather than current_setting(name, true): calling it loads the library,
 * which defines every batchflow setting with its default, so no default
 * is repeated in SQL.
 */
Datum
bf_sql_setting(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strncmp(name, "batchflow.", 10) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not a batchflow setting", name),
				 errhint("Use current_setting() for other settings.")));
	PG_RETURN_TEXT_P(cstring_to_text(GetConfigOptionByName(name, NULL, false)));
}
