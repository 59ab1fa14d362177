/*-------------------------------------------------------------------------
 *
 * loopcache.h
 *	  What a worker needs to know to execute a loop's items, cached per
 *	  process (loopcache.c).
 *
 * IDENTIFICATION
 *	  src/loopcache.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_LOOPCACHE_H
#define BATCHFLOW_LOOPCACHE_H

#include "postgres.h"

#include "utils/jsonb.h"

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
	bool		has_deps;		/* "dependsOn": claim ready items only (deps.c) */
	bool		has_workflow;	/* its child is a workflow (activity_workflow.c) */
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

#endif							/* BATCHFLOW_LOOPCACHE_H */
