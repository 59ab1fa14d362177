/*-------------------------------------------------------------------------
 *
 * http_batch.c
 *	  A worker executing the items of a loop with HTTP children, many at a
 *	  time, on one libcurl multi handle, without holding a transaction
 *	  across the network.
 *
 *	  An item with an HTTP child cannot run inside one transaction the way
 *	  an all-SQL item does, so its claim is made durable instead:
 *
 *	  1. In the claim transaction the worker takes the loop cap lock at session
 *		 level as well (so it outlives the commit), marks the item running
 *		 with its pid, and claims more items of the same loop, in one
 *		 statement (http_claim.c), up to batchflow.http_max_inflight and the
 *		 free cap locks; commit.
 *	  2. Outside any transaction, each item's requests go onto the multi
 *		 handle; bf_http_wait waits for any of them, or the latch.
 *	  3. Each round, one transaction records every item whose request ended
 *		 (plain successes in one statement, http_record.c; the others with
 *		 bf_record_result, the loop's error strategy included), runs the
 *		 SQL children that follow an HTTP child, and claims replacement
 *		 items into the freed cap locks (a recorded item's place counts as
 *		 free at once); the replacements' requests are sent before the
 *		 commit's flush; after the commit the finished items' session cap
 *		 lock references are released.
 *
 *	  The cap holds exactly: an item holds its cap lock, at session level,
 *	  from its claim until after its result is committed; a replacement
 *	  claimed in the same round takes over the very cap lock it inherits
 *	  (this backend never gives it up in between).  SQL children before an
 *	  HTTP child commit in the round that starts the request, so an item
 *	  mixing SQL and HTTP is at-least-once, not exactly-once.
 *
 *	  If the worker dies, its items stay marked running with its pid: the
 *	  launcher re-queues items whose worker_pid is no longer a live worker
 *	  (bf_requeue_orphans), and the lock manager has already dropped its
 *	  cap locks.  If a round fails with an error, bf_http_abandon drops the
 *	  requests and session locks and the worker re-queues its own items at
 *	  its next step.
 *
 * IDENTIFICATION
 *	  src/http_batch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "batchflow.h"
#include "activity_http.h"
#include "activity_sql.h"
#include "claim.h"
#include "http_batch.h"
#include "http_claim.h"
#include "http_record.h"
#include "item_result.h"
#include "pool.h"
#include "progress.h"
#include "run_control.h"
#include "spi_util.h"

/* One item this worker is executing. */
typedef struct BfInflight
{
	struct BfInflight *next;
	MemoryContext cxt;			/* everything of this item; deleted at the end */
	BfClaim		claim;
	int			next_child;		/* the child to run next */
	Datum		prev;			/* output of the child before next_child */
	bool		prev_isnull;
	BfHttpRequest *req;			/* request in flight, or NULL */
	bool		http_done;		/* a request ended: http_result holds it */
	BfItemResult http_result;
	bool		finished;		/* result recorded; release after commit */
	bool		succeeded;		/* a plain success, recorded with the round's */
} BfInflight;

static BfInflight *inflight = NULL;
static int	ninflight = 0;
static int64 batch_loop = 0;
static BfLoopInfo *batch_info = NULL;	/* the loop's cached description */
static Oid	batch_nsp = InvalidOid;	/* schema batchflow when the batch began */
static CURLM *multi = NULL;
static MemoryContext http_cxt = NULL;

/* Longest wait for the requests in flight before looking at them again. */
#define BF_HTTP_WAIT_MS 1000
static bool requeue_pending = false;
static SPIPlanPtr running_plan = NULL;

static void bf_http_init(void);
static bool bf_http_cap_lock_is_mine(const LOCKTAG *tag);
static void bf_http_mark_running(BfClaim *claim);
static void bf_http_adopt(BfClaim *claim);
static void bf_http_fill(BfLoopInfo *loop);
static bool bf_http_needs_txn(BfInflight *item, BfLoopInfo *loop);
static void bf_http_advance(BfInflight *item, BfLoopInfo *loop);
static void bf_http_record_round(BfLoopInfo *loop);
static void bf_http_round(void);
static void bf_http_start(BfInflight *item, BfLoopInfo *loop);
static void bf_http_send(BfLoopInfo *loop);
static int	bf_http_collect(void);
static void bf_http_fail(BfInflight *item, const char *sqlstate, char *error);
static void bf_http_wait(long max_ms);
static void bf_http_cancel_all(void);

/* Set up the multi handle and memory once per process. */
static void
bf_http_init(void)
{
	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialise libcurl")));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	http_cxt = AllocSetContextCreate(TopMemoryContext, "batchflow http",
									 ALLOCSET_DEFAULT_SIZES);
	bf_cap_lock_is_mine_hook = bf_http_cap_lock_is_mine;
}

/*
 * claim.c's question: is this cap lock held by one of our unfinished items,
 * or taken by the batch being claimed (http_claim.c)?
 */
static bool
bf_http_cap_lock_is_mine(const LOCKTAG *tag)
{
	if (bf_http_claim_pending(tag))
		return true;
	for (BfInflight *item = inflight; item; item = item->next)
		if (!item->finished && memcmp(&item->claim.cap_lock, tag, sizeof(LOCKTAG)) == 0)
			return true;
	return false;
}

/*
 * Mark a claimed item running with our pid (inside SPI, in its claim
 * transaction), for a claim made one at a time (bf_claim_for_http).
 */
static void
bf_http_mark_running(BfClaim *claim)
{
	Datum		args[4];

	static const Oid types[4] = {INT8OID, INT4OID, INT4OID, TIMESTAMPTZOID};

	bf_keep_plan(&running_plan,
				 "UPDATE batchflow.item"
				 "   SET status = 'running', worker_pid = $3, started_at = $4"
				 " WHERE loop_ref = $1 AND idx = $2", 4, types);
	args[0] = Int64GetDatum(claim->loop->loop_ref);
	args[1] = Int32GetDatum(claim->idx);
	args[2] = Int32GetDatum(MyProcPid);
	args[3] = TimestampTzGetDatum(claim->started_at);
	if (SPI_execute_plan(running_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not mark item %d running", claim->idx);
}

/*
 * Take over a claimed item already marked running (inside SPI, in its
 * claim transaction): hold its cap lock at session level, keep a copy of it.
 */
static void
bf_http_adopt(BfClaim *claim)
{
	MemoryContext cxt;
	MemoryContext old;
	BfInflight *item;

	(void) LockAcquire(&claim->cap_lock, ExclusiveLock, true, false);

	cxt = AllocSetContextCreate(http_cxt, "batchflow http item",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	item = palloc0(sizeof(BfInflight));
	item->cxt = cxt;
	item->claim = *claim;
	if (!claim->item_isnull)
		item->claim.item = PointerGetDatum(DatumGetJsonbPCopy(claim->item));
	item->prev_isnull = true;
	MemoryContextSwitchTo(old);

	/* Never act for a role that no longer exists. */
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(claim->loop->owner)))
	{
		bf_http_fail(item, "42704",
					 psprintf("role with OID %u that started run " INT64_FORMAT " no longer exists",
							  claim->loop->owner, claim->loop->run_id));
		item->http_result.fatal = true;
	}

	item->next = inflight;
	inflight = item;
	ninflight++;
}

/*
 * Claim more items of the loop, while there is room (inside SPI): as many
 * as fit in one statement (http_claim.c), or one at a time for the loops
 * claim.c alone knows how to order.  Items that finished in this round
 * make room at once, and their cap locks (still held at session level) are
 * the first ones their replacements take.
 */
static void
bf_http_fill(BfLoopInfo *loop)
{
	int			live = 0;
	int			nreuse = 0;
	int			want;
	int			n;
	BfClaim    *claims;
	LOCKTAG    *reuse;

	for (BfInflight *item = inflight; item; item = item->next)
		if (!item->finished)
			live++;
	want = bf_http_max_inflight - live;
	if (want <= 0)
		return;
	reuse = palloc(sizeof(LOCKTAG) * Max(ninflight - live, 1));
	for (BfInflight *item = inflight; item; item = item->next)
		if (item->finished)
			reuse[nreuse++] = item->claim.cap_lock;
	claims = palloc(sizeof(BfClaim) * want);
	n = bf_http_claim_batch(loop, want, reuse, nreuse, claims);
	for (int i = 0; i < n; i++)
		bf_http_adopt(&claims[i]);
	pfree(claims);
	pfree(reuse);
	if (n >= 0)
		return;
	while (live < bf_http_max_inflight)
	{
		BfClaim		claim;

		if (!bf_claim_for_http(loop, &claim))
			break;
		bf_http_mark_running(&claim);
		bf_http_adopt(&claim);
		live++;
	}
}

/*
 * Called by the worker in the transaction in which it claimed an item of a
 * loop with HTTP children (inside SPI): adopt it and claim its companions.
 * After the commit the worker calls bf_http_drive.
 */
void
bf_http_take(BfClaim *claim)
{
	bf_http_init();
	batch_loop = claim->loop->loop_ref;
	batch_info = claim->loop;
	batch_nsp = get_namespace_oid("batchflow", false);
	bf_http_mark_running(claim);
	bf_http_adopt(claim);
	if (!claim->loop->sequential)
		bf_http_fill(claim->loop);
	bf_pool_publish_batch(claim->loop->run_id, batch_loop, ninflight);
	bf_cancel_note_claim(ninflight > 0 ? claim->loop->run_id : 0);
	pgstat_report_activity(STATE_RUNNING, "batchflow: claiming HTTP items");
}

/* Fail the item's current step with an error of ours (no request made). */
static void
bf_http_fail(BfInflight *item, const char *sqlstate, char *error)
{
	MemoryContext old = MemoryContextSwitchTo(item->cxt);

	memset(&item->http_result, 0, sizeof(BfItemResult));
	item->http_result.ok = false;
	item->http_result.output_isnull = true;
	item->http_result.sqlstate = pstrdup(sqlstate);
	item->http_result.error = pstrdup(error);
	MemoryContextSwitchTo(old);
	item->http_done = true;
}

/* Does the item need a transaction before it can go on? */
static bool
bf_http_needs_txn(BfInflight *item, BfLoopInfo *loop)
{
	if (item->req != NULL || item->finished)
		return false;
	if (item->http_done || item->next_child >= loop->nchildren)
		return true;
	return strcmp(loop->children[item->next_child].activity, "http") != 0;
}

/*
 * Move an item on, inside the round's transaction (inside SPI): take in
 * the outcome of its request, run the SQL children up to the next HTTP
 * child, and record the attempt when it ends here.
 */
static void
bf_http_advance(BfInflight *item, BfLoopInfo *loop)
{
	BfItemResult result;
	bool		record = false;

	item->claim.loop = loop;
	memset(&result, 0, sizeof(result));
	if (item->http_done)
	{
		item->http_done = false;
		if (!item->http_result.ok)
		{
			result = item->http_result;
			record = true;
		}
		else
		{
			item->prev = item->http_result.output;
			item->prev_isnull = item->http_result.output_isnull;
			item->next_child++;
		}
	}

	if (!record)
	{
		int			stop = item->next_child;

		while (stop < loop->nchildren &&
			   strcmp(loop->children[stop].activity, "http") != 0)
			stop++;
		if (stop > item->next_child)
		{
			bf_execute_children(&item->claim, item->next_child, stop,
								item->prev, item->prev_isnull, &result);
			if (!result.ok)
				record = true;
			else
			{
				MemoryContext old = MemoryContextSwitchTo(item->cxt);

				item->prev_isnull = result.output_isnull;
				if (!result.output_isnull)
					item->prev = PointerGetDatum(DatumGetJsonbPCopy(result.output));
				MemoryContextSwitchTo(old);
				item->next_child = stop;
			}
		}
		if (!record && item->next_child >= loop->nchildren)
		{
			memset(&result, 0, sizeof(result));
			result.ok = true;
			result.output = item->prev;
			result.output_isnull = item->prev_isnull;
			record = true;
		}
	}

	if (!record)
		return;
	/* A plain success is recorded with the round's others (http_record.c). */
	if (result.ok && !loop->is_activity && !loop->has_deps)
	{
		item->prev = result.output;
		item->prev_isnull = result.output_isnull;
		item->succeeded = true;
	}
	else
		(void) bf_record_result(&item->claim, &result);
	item->finished = true;
}

/* Record the round's plain successes in one statement (inside SPI). */
static void
bf_http_record_round(BfLoopInfo *loop)
{
	int			n = 0;
	BfClaim   **claims = palloc(sizeof(BfClaim *) * Max(ninflight, 1));
	Datum	   *outputs = palloc(sizeof(Datum) * Max(ninflight, 1));
	bool	   *isnull = palloc(sizeof(bool) * Max(ninflight, 1));

	for (BfInflight *item = inflight; item; item = item->next)
	{
		if (!item->succeeded)
			continue;
		claims[n] = &item->claim;
		outputs[n] = item->prev;
		isnull[n] = item->prev_isnull;
		n++;
		item->succeeded = false;
	}
	bf_http_record_successes(loop, claims, outputs, isnull, n);
	pfree(claims);
	pfree(outputs);
	pfree(isnull);
}

/*
 * One bookkeeping transaction: advance every item that waits for one,
 * claim replacements for the finished ones, commit, then let go of the
 * finished items' cap lock references.
 */
static void
bf_http_round(void)
{
	BfLoopInfo *loop;
	BfInflight **link;
	bool		any_finished = false;

	bf_txn_begin("batchflow: recording HTTP items");

	/*
	 * The loop's description, looked up again: the cache may have been
	 * refilled since.  If schema batchflow was dropped (and maybe created
	 * again: loop ids then start again from 1, so batch_loop may name a
	 * loop of the new schema), or the run was deleted, the batch's items
	 * are gone: drop them without recording anything.
	 */
	loop = get_namespace_oid("batchflow", true) == batch_nsp ?
		bf_loop_info(batch_loop) : NULL;
	batch_info = loop;
	for (BfInflight *item = inflight; item; item = item->next)
	{
		if (loop == NULL)
		{
			item->finished = true;
			continue;
		}
		item->claim.loop = loop;
		if (bf_http_needs_txn(item, loop))
			bf_http_advance(item, loop);
		any_finished |= item->finished;
	}
	if (loop != NULL && any_finished)
	{
		/*
		 * The successes first, so that an item's finished_at is never
		 * later than the started_at of the replacement that takes its cap
		 * lock; then the replacements, and the SQL children they start
		 * with (a replacement cannot succeed before its first request).
		 */
		bf_http_record_round(loop);
		bf_http_fill(loop);
		for (BfInflight *item = inflight; item; item = item->next)
			if (bf_http_needs_txn(item, loop))
				bf_http_advance(item, loop);
		bf_http_record_round(loop);
	}

	/*
	 * The replacements' requests go out now rather than after the commit's
	 * flush: each holds its cap lock already, and if this transaction does
	 * not commit, its items stay pending and are sent again (HTTP effects
	 * are at-least-once); nothing here waits on the network.
	 */
	if (loop != NULL)
		bf_http_send(loop);
	bf_progress_flush();
	bf_txn_end();

	link = &inflight;
	while (*link)
	{
		BfInflight *item = *link;

		if (!item->finished)
		{
			link = &item->next;
			continue;
		}
		if (item->req != NULL)
		{
			/* Dropped with its request still in flight. */
			curl_multi_remove_handle(multi, item->req->easy);
			bf_http_release(item->req);
			item->req = NULL;
		}
		LockRelease(&item->claim.cap_lock, ExclusiveLock, true);
		*link = item->next;
		ninflight--;
		MemoryContextDelete(item->cxt);
	}
	bf_pool_publish_batch(batch_info ? batch_info->run_id : 0, batch_loop, ninflight);
	bf_cancel_note_claim(ninflight > 0 && batch_info != NULL ? batch_info->run_id : 0);
}

/* Put the item's next (HTTP) child's request on the multi handle. */
static void
bf_http_start(BfInflight *item, BfLoopInfo *loop)
{
	BfChild    *child = &loop->children[item->next_child];
	BfTemplateContext ctx;
	MemoryContext old;
	char	   *error = NULL;
	char	   *key;
	BfHttpRequest *req;
	CURLMcode	mc;

	ctx.item = item->claim.item_isnull ? NULL : DatumGetJsonbP(item->claim.item);
	ctx.index = item->claim.idx;
	ctx.run_id = loop->run_id;

	old = MemoryContextSwitchTo(item->cxt);
	key = psprintf("batchflow-" INT64_FORMAT "-%s-%d-%s", loop->run_id,
				   loop->node_id, item->claim.idx, child->id);
	req = bf_http_prepare(child, &ctx, key, &error);
	MemoryContextSwitchTo(old);
	if (req == NULL)
	{
		bf_http_fail(item, "22023", error);
		return;
	}
	req->owner = item;
	mc = curl_multi_add_handle(multi, req->easy);
	if (mc != CURLM_OK)
	{
		bf_http_release(req);
		bf_http_fail(item, "58000", psprintf("curl_multi_add_handle failed: %s",
											 curl_multi_strerror(mc)));
		return;
	}
	item->req = req;
}

/*
 * Start the requests of the items waiting at an HTTP child, and let libcurl
 * send what it can without waiting.
 */
static void
bf_http_send(BfLoopInfo *loop)
{
	int			running;
	bool		any = false;

	for (BfInflight *item = inflight; item; item = item->next)
		if (item->req == NULL && !item->http_done && !item->finished &&
			item->next_child < loop->nchildren &&
			strcmp(loop->children[item->next_child].activity, "http") == 0)
		{
			bf_http_start(item, loop);
			any = true;
		}
	if (any)
		curl_multi_perform(multi, &running);
}

/* Take in the requests that ended; returns how many. */
static int
bf_http_collect(void)
{
	CURLMsg    *msg;
	int			left;
	int			n = 0;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		CURL	   *easy = msg->easy_handle;
		CURLcode	code = msg->data.result;
		BfHttpRequest *req = NULL;
		BfInflight *item;
		MemoryContext old;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &req);
		item = (BfInflight *) req->owner;
		old = MemoryContextSwitchTo(item->cxt);
		bf_http_finish(req, (int) code, &item->http_result);
		MemoryContextSwitchTo(old);
		curl_multi_remove_handle(multi, easy);
		bf_http_release(req);
		item->req = NULL;
		item->http_done = true;
		n++;
	}
	return n;
}

/*
 * Wait until a socket of a request in flight is ready, libcurl's own
 * timeout passes (at most max_ms), the latch is set (SIGTERM, SIGHUP, new
 * work) or the postmaster dies, which ends the process: a background worker
 * must notice both while requests are in flight, which curl_multi_poll
 * alone does not.  The sockets come from curl_multi_fdset (libcurl has no
 * curl_multi_waitfds before 8.8); a socket it cannot put in an fd_set is
 * only looked at when the wait times out.
 */
static void
bf_http_wait(long max_ms)
{
	fd_set		rd,
				wr,
				ex;
	int			maxfd = -1;
	long		timeout = -1;
	int			nevents = 2;
	WaitEventSet *set;
	WaitEvent	event;

	FD_ZERO(&rd);
	FD_ZERO(&wr);
	FD_ZERO(&ex);
	if (curl_multi_fdset(multi, &rd, &wr, &ex, &maxfd) != CURLM_OK)
		maxfd = -1;
	if (curl_multi_timeout(multi, &timeout) != CURLM_OK || timeout < 0 || timeout > max_ms)
		timeout = max_ms;
	/* No socket yet (a name is being resolved): look again soon. */
	if (maxfd < 0)
		timeout = Min(timeout, 10);
	for (int fd = 0; fd <= maxfd; fd++)
		if (FD_ISSET(fd, &rd) || FD_ISSET(fd, &wr) || FD_ISSET(fd, &ex))
			nevents++;

	set = CreateWaitEventSet(CurrentMemoryContext, nevents);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int fd = 0; fd <= maxfd; fd++)
	{
		int			events = 0;

		if (FD_ISSET(fd, &rd) || FD_ISSET(fd, &ex))
			events |= WL_SOCKET_READABLE;
		if (FD_ISSET(fd, &wr))
			events |= WL_SOCKET_WRITEABLE;
		if (events != 0)
			AddWaitEventToSet(set, events, fd, NULL, NULL);
	}
	(void) WaitEventSetWait(set, timeout, &event, 1, PG_WAIT_EXTENSION);
	FreeWaitEventSet(set);
	ResetLatch(MyLatch);
}

/*
 * bf_cancel(force => true) of the batch's run: abort every request in
 * flight (removing a transfer from the multi handle closes its connection)
 * and end every unfinished item as cancelled at the next round.
 */
static void
bf_http_cancel_all(void)
{
	for (BfInflight *item = inflight; item; item = item->next)
	{
		if (item->finished || (item->http_done && item->http_result.cancelled))
			continue;
		if (item->req != NULL)
		{
			curl_multi_remove_handle(multi, item->req->easy);
			bf_http_release(item->req);
			item->req = NULL;
		}
		bf_http_fail(item, "57014", "cancelled");
		item->http_result.cancelled = true;
	}
}

/*
 * Drive the adopted items to the end, claiming replacements as cap locks free
 * up, until nothing of the loop is left for this worker.
 */
void
bf_http_drive(void)
{
	while (inflight != NULL)
	{
		bool		txn = false;
		int			running = 0;
		char		activity[64];

		for (BfInflight *item = inflight; item && !txn; item = item->next)
			txn = bf_http_needs_txn(item, batch_info);
		if (txn)
			bf_http_round();
		if (inflight == NULL)
			break;

		bf_http_send(batch_info);
		snprintf(activity, sizeof(activity), "batchflow: %d HTTP items in flight", ninflight);
		pgstat_report_activity(STATE_RUNNING, activity);
		curl_multi_perform(multi, &running);
		if (bf_http_collect() == 0 && running > 0)
		{
			bf_http_wait(BF_HTTP_WAIT_MS);
			curl_multi_perform(multi, &running);
			(void) bf_http_collect();
		}

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (batch_info != NULL && bf_cancel_requested(batch_info->run_id))
			bf_http_cancel_all();
	}
	batch_info = NULL;
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * After an error: drop every request and session cap lock.  The items
 * stay marked running with our pid until bf_http_requeue_mine, at the
 * worker's next step, puts them back.
 */
void
bf_http_abandon(void)
{
	if (multi == NULL)
		return;
	bf_http_claim_reset();
	for (BfInflight *item = inflight; item; item = item->next)
	{
		if (item->req != NULL)
		{
			curl_multi_remove_handle(multi, item->req->easy);
			bf_http_release(item->req);
			item->req = NULL;
		}
		/*
		 * Release the session-level cap lock this item holds, and nothing
		 * else: the item's own SQL may have taken session-level advisory
		 * locks of its own (LockReleaseSession would drop those too).
		 */
		LockRelease(&item->claim.cap_lock, ExclusiveLock, true);
		requeue_pending = true;
	}
	inflight = NULL;
	ninflight = 0;
	batch_info = NULL;
	MemoryContextReset(http_cxt);
}

/* Re-queue items this worker left running after an error (inside SPI). */
void
bf_http_requeue_mine(void)
{
	Datum		arg = Int32GetDatum(MyProcPid);
	Oid			argtype = INT4OID;

	if (!requeue_pending)
		return;
	if (SPI_execute_with_args("UPDATE batchflow.item SET status = 'pending', worker_pid = NULL"
							  " WHERE status = 'running' AND worker_pid = $1",
							  1, &argtype, &arg, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not re-queue abandoned HTTP items");
	requeue_pending = false;
}
