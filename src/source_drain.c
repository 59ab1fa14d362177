/*-------------------------------------------------------------------------
 *
 * source_drain.c
 *	  The drainer: a dynamic background worker that reads the rows of one
 *	  loop's query (or the elements of its large JSON array) and streams
 *	  them, as jsonb items, to the item worker that started it through a
 *	  shared-memory queue (source_fill.c commits them in chunks).
 *
 *	  The loop's source is read in a short transaction first (so that no
 *	  lock on batchflow's tables is held while streaming).  A query is then
 *	  read in one transaction and one portal, so every row comes from the
 *	  one snapshot taken right after the loop's start; memory stays flat
 *	  (rows are fetched 1000 at a time).  An array is streamed from the copy.
 *	  A query runs as the run's owner in a security-restricted operation,
 *	  with $1 = the run's variables, with synchronize_seqscans off so that a
 *	  re-read after a crash meets the rows in the same order.  Rows already
 *	  materialised (the header's skip) are skipped without being sent.
 *
 *	  Messages: BF_DRAIN_ESTIMATE (the planner's row estimate), one
 *	  BF_DRAIN_ROW per item, then BF_DRAIN_DONE, or BF_DRAIN_ERROR with the
 *	  error's message.  If the receiver detaches, the drainer just exits.
 *
 * IDENTIFICATION
 *	  src/source_drain.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"

#include "batchflow.h"
#include "bigbatch.h"
#include "security.h"

#define BF_DRAIN_FETCH 1000

static shm_mq_handle *drain_mqh = NULL;
static bool receiver_gone = false;

/* Send one message: a kind byte and a payload; false if nobody listens. */
static bool
bf_drain_send(char kind, const void *data, Size len, bool flush)
{
	shm_mq_iovec iov[2];

	if (receiver_gone)
		return false;
	iov[0].data = &kind;
	iov[0].len = 1;
	iov[1].data = data;
	iov[1].len = len;
	if (shm_mq_sendv(drain_mqh, iov, len > 0 ? 2 : 1, false, flush) != SHM_MQ_SUCCESS)
		receiver_gone = true;
	return !receiver_gone;
}

/* Send one jsonb item. */
static bool
bf_drain_send_item(Jsonb *item)
{
	return bf_drain_send(BF_DRAIN_ROW, item, VARSIZE(item), false);
}

/* The user's query, without trailing blanks and semicolons. */
static char *
bf_drain_trim(const char *sql)
{
	char	   *s = pstrdup(sql);
	int			len = strlen(s);

	while (len > 0 && (isspace((unsigned char) s[len - 1]) || s[len - 1] == ';'))
		s[--len] = '\0';
	return s;
}

/* Stream a query's rows (inside SPI), as the run's owner. */
static void
bf_drain_query(const char *query, Datum vars, Oid owner, int64 run_id, int64 skip)
{
	BfSavedUser saved;
	Oid			argtype = JSONBOID;
	char	   *inner = bf_drain_trim(query);
	char	   *sql;
	int			natts;
	Portal		portal;
	double		estimate = 0;
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "batchflow drain rows",
												 ALLOCSET_DEFAULT_SIZES);

	bf_become_run_owner(owner, run_id, &saved);
	(void) set_config_option("synchronize_seqscans", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	/* One column: its value is the item; several: an object of them. */
	if (SPI_execute_with_args(psprintf("SELECT * FROM (\n%s\n) AS q LIMIT 0", inner),
							  1, &argtype, &vars, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not describe the query");
	natts = SPI_tuptable->tupdesc->natts;
	SPI_freetuptable(SPI_tuptable);
	sql = natts == 1
		? psprintf("SELECT to_jsonb(q.c) FROM (\n%s\n) AS q(c)", inner)
		: psprintf("SELECT to_jsonb(q) FROM (\n%s\n) AS q", inner);

	portal = SPI_cursor_open_with_args(NULL, sql, 1, &argtype, &vars, NULL, true, 0);
	if (portal->stmts != NIL && IsA(linitial(portal->stmts), PlannedStmt))
		estimate = linitial_node(PlannedStmt, portal->stmts)->planTree->plan_rows;
	if (!bf_drain_send(BF_DRAIN_ESTIMATE, &estimate, sizeof(double), true))
		return;
	if (skip > 0)
		SPI_cursor_move(portal, true, skip);

	for (;;)
	{
		MemoryContext oldcxt;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, BF_DRAIN_FETCH);
		if (SPI_processed == 0)
			break;
		oldcxt = MemoryContextSwitchTo(rowcxt);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			Jsonb	   *item;

			/* A NULL value is the JSON null. */
			item = isnull ? DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("null")))
				: DatumGetJsonbP(d);
			if (!bf_drain_send_item(item))
				break;
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(rowcxt);
		SPI_freetuptable(SPI_tuptable);
		if (receiver_gone)
			return;
	}
	SPI_cursor_close(portal);
	bf_restore_after_activity(&saved);
}

/* Stream the elements of a JSON array from the skip-th on. */
static void
bf_drain_array(Datum array, int64 skip)
{
	Jsonb	   *jb = DatumGetJsonbP(array);
	uint32		n;
	double		estimate;
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "batchflow drain rows",
												 ALLOCSET_DEFAULT_SIZES);

	if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the input source is no longer an array")));
	n = JB_ROOT_COUNT(jb);
	estimate = n;
	if (!bf_drain_send(BF_DRAIN_ESTIMATE, &estimate, sizeof(double), true))
		return;
	for (uint32 i = (uint32) skip; i < n; i++)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(rowcxt);
		JsonbValue *v = getIthJsonbValueFromContainer(&jb->root, i);
		bool		sent = bf_drain_send_item(JsonbValueToJsonb(v));

		MemoryContextSwitchTo(oldcxt);
		if (i % BF_DRAIN_FETCH == 0)
		{
			MemoryContextReset(rowcxt);
			CHECK_FOR_INTERRUPTS();
		}
		if (!sent)
			return;
	}
}

/* What the drainer reads of its loop before it starts streaming. */
typedef struct BfDrainSource
{
	bool		found;
	bool		is_query;
	char	   *query;
	int64		run_id;
	Oid			owner;
	Datum		vars;			/* jsonb, for $1 */
	Datum		array;			/* jsonb, or 0 when NULL */
} BfDrainSource;

/*
 * Read the loop's source in a short transaction of its own, copying what is
 * needed into TopMemoryContext: the drainer then holds no lock on
 * batchflow's tables while it streams, so DDL on them (ALTER EXTENSION) is
 * never queued behind it while the workers that consume its rows wait
 * behind that DDL.
 */
static void
bf_drain_read(int64 loop_ref, BfDrainSource *src)
{
	Datum		arg = Int64GetDatum(loop_ref);
	Oid			argtype = INT8OID;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	MemoryContext oldcxt;

	memset(src, 0, sizeof(*src));
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args("SELECT f.kind, f.source ->> 'query', f.run_id, r.owner, r.vars,"
							  "       CASE f.source ->> 'from'"
							  "            WHEN 'vars' THEN r.vars -> (f.source ->> 'name')"
							  "            WHEN 'outputs' THEN r.outputs -> (f.source ->> 'name')"
							  "            ELSE l.node -> 'inputSource' -> 'static' END"
							  "  FROM batchflow.loop_fill f"
							  "  JOIN batchflow.loop l ON l.id = f.loop_ref"
							  "  JOIN batchflow.run r ON r.id = f.run_id"
							  " WHERE f.loop_ref = $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the source of loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 1)
	{
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		src->found = true;
		src->is_query = strcmp(SPI_getvalue(tup, desc, 1), "query") == 0;
		src->query = src->is_query ? SPI_getvalue(tup, desc, 2) : NULL;
		src->run_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		src->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
		if (src->is_query)
			src->vars = PointerGetDatum(DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull)));
		else
		{
			Datum		d = SPI_getbinval(tup, desc, 6, &isnull);

			src->array = isnull ? (Datum) 0 : PointerGetDatum(DatumGetJsonbPCopy(d));
		}
		MemoryContextSwitchTo(oldcxt);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * Stream the loop's rows: a query in a transaction of its own (one
 * snapshot, one portal), an array from the copy read by bf_drain_read.
 */
static void
bf_drain_run(int64 loop_ref, int64 skip)
{
	BfDrainSource src;

	bf_drain_read(loop_ref, &src);
	if (!src.found)
		return;					/* done or deleted meanwhile */
	if (src.is_query)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "batchflow: reading the items of a loop");
		bf_drain_query(src.query, src.vars, src.owner, src.run_id, skip);
		SPI_finish();
		PopActiveSnapshot();
		AbortCurrentTransaction();	/* read only */
	}
	else
	{
		if (src.array == (Datum) 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the input source is no longer an array")));
		pgstat_report_activity(STATE_RUNNING, "batchflow: reading the items of a loop");
		bf_drain_array(src.array, skip);
	}
	(void) bf_drain_send(BF_DRAIN_DONE, NULL, 0, true);
}

/* Entry point of a drainer; main_arg is the handle of its segment. */
void
bf_drain_main(Datum main_arg)
{
	dsm_segment *seg;
	BfDrainHeader *hdr;
	shm_mq	   *mq;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		proc_exit(0);			/* the worker that started us gave up */
	hdr = dsm_segment_address(seg);
	mq = (shm_mq *) ((char *) hdr + MAXALIGN(sizeof(BfDrainHeader)));
	shm_mq_set_sender(mq, MyProc);
	drain_mqh = shm_mq_attach(mq, seg, NULL);

	BackgroundWorkerInitializeConnectionByOid(hdr->dboid, InvalidOid, 0);
	bf_worker_pin_search_path();
	pgstat_report_appname("batchflow drain");

	PG_TRY();
	{
		bf_drain_run(hdr->loop_ref, hdr->skip);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		RESUME_INTERRUPTS();
		/* Interrupted (SIGTERM): just go; anything else fails the loop. */
		if (edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			proc_exit(1);
		(void) bf_drain_send(BF_DRAIN_ERROR, edata->message, strlen(edata->message) + 1, true);
		AbortCurrentTransaction();
		proc_exit(0);
	}
	PG_END_TRY();
	proc_exit(0);
}
