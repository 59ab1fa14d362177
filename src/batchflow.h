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
#include "lib/stringinfo.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/spin.h"
#include "utils/jsonb.h"

/* GUC bounds, as named constants */
#define BF_DEFAULT_MAX_WORKERS		10
#define BF_MAX_MAX_WORKERS			256
#define BF_DEFAULT_MAX_CONCURRENCY	10
#define BF_MAX_MAX_CONCURRENCY		10000
#define BF_DEFAULT_POLL_MS			1000
#define BF_DEFAULT_BATCH_MS			2
#define BF_MAX_BATCH_ITEMS			100
#define BF_DEFAULT_MAX_ITEMS_PER_RUN	10000000
#define BF_DEFAULT_MAX_ITEM_KB		(16 * 1024)
#define BF_MAX_MAX_ITEM_KB			(256 * 1024 - 1)	/* jsonb's own limit */

/* GUC variables (batchflow.c) */
extern char *bf_database_name;
extern int	bf_max_workers;
extern int	bf_max_concurrency;
extern int	bf_poll_interval_ms;
extern int	bf_batch_ms;

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
	int32		nactive;		/* items executing (an HTTP batch has many) */
} BfWorkerSlot;

typedef struct BfShared
{
	bool		recovered;		/* launcher ran the after-restart recovery */
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
extern void bf_publish_batch(int64 run_id, int64 loop_ref, int nactive);

/* loopcache.c: what a worker needs to know to execute a loop's items */
typedef enum BfErrorStrategy
{
	BF_FAIL_FAST,
	BF_CONTINUE,
	BF_RETRY
} BfErrorStrategy;

typedef struct BfChild
{
	char	   *id;
	char	   *activity;		/* "sql" or "http" */
	char	   *sql;
	int			timeout_ms;
	bool		uses_context;	/* does the SQL mention $3 at all? */
	struct _SPI_plan *plan;		/* prepared on first use, kept */
	Jsonb	   *node;			/* the child's definition */
} BfChild;

typedef struct BfLoopInfo
{
	int64		loop_ref;		/* hash key */
	int64		run_id;
	Oid			owner;
	bool		is_activity;	/* a top-level activity run as a one-item loop */
	bool		has_http;		/* does any child call HTTP? (http_batch.c) */
	char	   *node_id;
	char	   *output_var;		/* top-level activity's "output", or NULL */
	int32		total;
	bool		sequential;
	int			concurrency;
	BfErrorStrategy strategy;
	int			max_retries;
	int			retry_delay_ms;
	Jsonb	   *vars;
	int			nchildren;
	BfChild    *children;
} BfLoopInfo;

extern BfLoopInfo *bf_loop_info(int64 loop_ref);
extern void bf_loop_info_forget(int64 loop_ref);
extern void bf_loop_cache_retain(const int64 *open_ids, int n);
extern int	bf_loop_cache_count(void);

/* claim.c: choosing a loop and claiming its next item under the cap */
typedef struct BfClaim
{
	BfLoopInfo *loop;
	int32		idx;
	int32		attempts;
	Datum		item;			/* jsonb, or 0 when SQL NULL */
	bool		item_isnull;
	TimestampTz started_at;
	LOCKTAG		slot;			/* the loop slot held for this item */
} BfClaim;

#define BF_MAX_CLOSE 64
extern bool bf_claim_next(BfClaim *claim, TimestampTz *next_due,
						  int64 *close_list, int *nclose);

/* claim_batch.c: the next item of the held loop, for the same transaction */
extern bool bf_claim_more(BfClaim *claim);

/* activity_sql.c: running an item's children */
typedef struct BfItemResult
{
	bool		ok;
	Datum		output;			/* jsonb of the last child, when ok */
	bool		output_isnull;
	char	   *error;			/* when !ok */
	char	   *sqlstate;
	char	   *failed_child;
	bool		fatal;			/* fail the loop at once, whatever its strategy */
	long		retry_after_ms; /* HTTP Retry-After: earliest retry, or 0 */
} BfItemResult;

extern void bf_execute_item(BfClaim *claim, BfItemResult *result);
extern void bf_execute_children(BfClaim *claim, int first, int stop,
								Datum prev, bool prev_isnull,
								BfItemResult *result);
extern Datum bf_first_column_as_jsonb(bool *isnull);

/* claim.c: one more item of a given loop, for an HTTP batch */
extern bool bf_claim_in(BfLoopInfo *loop, BfClaim *claim);
extern bool (*bf_slot_is_mine_hook) (const LOCKTAG *tag);

/* http_template.c: {{...}} placeholders of HTTP activities */
typedef struct BfTemplateContext
{
	Jsonb	   *item;			/* NULL for SQL NULL */
	int32		index;
	int64		run_id;
} BfTemplateContext;

extern char *bf_template_text(const char *tmpl, const BfTemplateContext *ctx,
							  bool encode, char **error);
extern Jsonb *bf_template_json(Jsonb *body, const BfTemplateContext *ctx,
							   char **error);

/* activity_http.c: one request on a libcurl easy handle */
typedef struct BfHttpRequest
{
	void	   *easy;			/* CURL * */
	struct curl_slist *headers;
	char	   *url;
	char	   *method;
	char	   *request_body;
	StringInfoData body;		/* response body, up to max_body bytes */
	StringInfoData headers_raw; /* header lines of the last response */
	int			max_body;
	bool		truncated;
	int			timeout_ms;
	char		errbuf[256];	/* CURL_ERROR_SIZE */
	void	   *owner;			/* the in-flight item (http_batch.c) */
} BfHttpRequest;

extern int	bf_http_timeout_ms;
extern int	bf_http_max_response_kb;
extern int	bf_http_max_redirects;
extern int	bf_http_max_inflight;
extern char *bf_http_allowed_hosts;
extern void bf_http_define_gucs(void);
extern BfHttpRequest *bf_http_prepare(BfChild *child, const BfTemplateContext *ctx,
									  const char *idempotency_key, char **error);
extern void bf_http_finish(BfHttpRequest *req, int code, BfItemResult *result);
extern void bf_http_release(BfHttpRequest *req);

/* http_batch.c: a worker driving many HTTP items at once */
extern void bf_http_take(BfClaim *claim);
extern void bf_http_drive(void);
extern void bf_http_abandon(void);
extern void bf_http_requeue_mine(void);

/* item_result.c: recording an attempt's outcome in the claim's transaction */
extern void bf_record_result(BfClaim *claim, BfItemResult *result);
extern bool bf_will_retry(BfClaim *claim, BfItemResult *result);

/* run.c: closing loops and advancing runs */
extern bool bf_loop_try_close(int64 loop_ref);
extern bool bf_loop_close_if_done(int64 loop_ref);
extern void bf_requeue_orphans(void);
extern void bf_recover_after_restart(void);
extern int64 *bf_loops_to_close(MemoryContext cxt, int *n);

/*
 * progress.c: batched progress counters.  bf_progress_item_done counts an
 * item whose attempt was just recorded, in the same transaction; every
 * path that gives an item its final status must call it.  Item workers
 * call bf_progress_flush once per transaction, inside SPI, before commit.
 */
extern void bf_progress_define_gucs(void);
extern Size bf_progress_shmem_size(void);
extern void bf_progress_shmem_startup(void);
extern void bf_progress_item_done(BfClaim *claim, BfItemResult *result);
extern void bf_progress_flush(void);

/* history.c: the launcher rebuilds progress counters and prunes history */
extern void bf_progress_sweep(void);

/*
 * security.c: switching to the extension owner for bookkeeping, to a run's
 * owner for activities, and the ownership checks on runs.
 */
typedef struct BfSavedUser
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;		/* GUC nest level opened by the switch */
} BfSavedUser;

extern int	bf_max_items_per_run;
extern int	bf_max_item_kb;
extern void bf_limits_define_gucs(void);
extern Oid	bf_admin_role(void);
extern bool bf_role_can_manage(Oid role, Oid owner);
extern bool bf_can_manage(Oid owner);
extern void bf_check_run_access(int64 run_id, Oid owner, Oid role);
extern void bf_become_admin(BfSavedUser *saved);
extern void bf_restore_user(const BfSavedUser *saved);
extern void bf_worker_pin_search_path(void);
extern void bf_become_run_owner(Oid owner, int64 run_id, BfSavedUser *saved);
extern void bf_restore_after_activity(const BfSavedUser *saved);

/*
 * definition.c: parsing and validating workflow definitions.
 * bf_validate_definition ereports ERROR on the first problem found.
 */
extern void bf_validate_definition(Jsonb *definition);

/* register.c: bf_register and its size limit */
extern int	bf_max_definition_kb;
extern void bf_register_define_gucs(void);

#endif							/* BATCHFLOW_H */
