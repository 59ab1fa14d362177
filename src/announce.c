/*-------------------------------------------------------------------------
 *
 * announce.c
 *	  NOTIFY batchflow_progress, sent after the commit by one process per
 *	  database instead of by the transaction that made the change: the
 *	  transaction's side (its payloads, its pre-commit, commit and abort).
 *
 *	  A transaction that calls NOTIFY takes PostgreSQL's notify lock (one
 *	  for the whole cluster) just before its commit record and holds it
 *	  until the commit is flushed, so every notifying commit waits for the
 *	  previous one: bf_start, loop closes and progress flushes all
 *	  announce, and they went one at a time.  Here, such a transaction
 *	  only computes its payloads (batchflow._announce, from the progress
 *	  triggers and progress_count.c).  At pre-commit, if the notify lock
 *	  is free (no other commit is notifying) and nothing of its database
 *	  is pending in the queue (announce_queue.c), it takes the lock
 *	  without waiting and notifies itself, as before: no delay, no extra
 *	  transaction.  Otherwise it reserves one entry per payload in the
 *	  shared queue of its database; at commit the entries become ready,
 *	  at abort they are cancelled.  The database's announcer
 *	  (announcer.c, announce_sender.c) sends the ready entries in one
 *	  short transaction of its own: many NOTIFYs, one commit
 *	  (asynchronous: a notification survives no crash anyway), one hold
 *	  of the notify lock.  The order of the announcements and why none is
 *	  lost are explained in announce_queue.c.
 *
 *	  Invariants, and why they hold:
 *	  - A rolled-back transaction announces nothing: payloads are kept
 *	    per subtransaction level and dropped with it; entries are reserved
 *	    only at pre-commit and cancelled at abort.
 *	  - The uncontended path takes, like the fallback below, the ready
 *	    entries reserved before it ahead of its own payloads; it gives up
 *	    (and queues) if any of them is pending or being sent, and it only
 *	    tries the notify lock, so it never waits while holding it.
 *	  - The fallback.  When the database has no running announcer (not
 *	    started yet, leaving, not served by the pool, batchflow not
 *	    preloaded), the queue is full, or a payload is too long for an
 *	    entry, the transaction notifies itself at pre-commit, as before;
 *	    it first waits until no entry of its database is pending or being
 *	    sent (those transactions are committing) and takes the ready ones
 *	    into its own transaction ahead of its payloads, so the order
 *	    holds across both paths.  Waiters hold no notify lock (pre-commit
 *	    callbacks run before PostgreSQL takes it), so the wait ends.
 *	  - PREPARE TRANSACTION is refused for a transaction that announced,
 *	    as for any NOTIFY: its payloads are handed to PostgreSQL at
 *	    pre-prepare, which then refuses.
 *
 * IDENTIFICATION
 *	  src/announce.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "announce.h"
#include "announce_queue.h"
#include "announce_sender.h"
#include "db_served.h"

/* PostgreSQL's limit on a NOTIFY payload (private to async.c). */
#define BF_NOTIFY_PAYLOAD_MAX (BLCKSZ - NAMEDATALEN - 128)

/* A payload of the current transaction, not reserved yet. */
typedef struct BfAnnPayload
{
	char	   *text;
	int			level;			/* subtransaction nesting level */
} BfAnnPayload;

/* Tests only: queue even when the notify lock is free. */
static bool bf_debug_announce_queued = false;

/* The current transaction's part. */
static bool callbacks_registered = false;
static List *txn_payloads = NIL;	/* of BfAnnPayload, TopTransactionContext */
static bool txn_precommitted = false;

PG_FUNCTION_INFO_V1(bf_sql_announce);

static void bf_ann_xact_callback(XactEvent event, void *arg);
static void bf_ann_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									SubTransactionId parentSubid, void *arg);
static int	bf_ann_unique(char ***out);
static void bf_ann_pre_commit(void);
static bool bf_ann_send_if_free(char **p, int n);
static void bf_ann_send_now(char **p, int n);
static void bf_ann_notify(char **queued, int nqueued, char **p, int n);
static void bf_ann_reset_txn(void);

/* Declare batchflow.debug_announce_queued (any backend). */
void
bf_announce_define_gucs(void)
{
	DefineCustomBoolVariable("batchflow.debug_announce_queued",
							 "For tests: progress announcements always go through the database's announcer when it runs.",
							 "Off (the default), a transaction that finds no other commit notifying sends its payloads itself, at once.",
							 &bf_debug_announce_queued,
							 false,
							 PGC_SIGHUP,
							 GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);
}

/*
 * Announce payload on NOTIFY batchflow_progress when the current
 * transaction commits.  Without the shared queue (batchflow not
 * preloaded), and in a parallel worker (which PostgreSQL refuses), this
 * is NOTIFY itself.
 */
void
bf_announce(const char *payload)
{
	MemoryContext old;
	BfAnnPayload *p;

	if (!bf_annq_exists() || IsParallelWorker())
	{
		Async_Notify(BF_ANNOUNCE_CHANNEL, payload);
		return;
	}
	/* pg_notify's own check, at the same moment. */
	if (strlen(payload) >= BF_NOTIFY_PAYLOAD_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload string too long")));
	if (txn_precommitted)
		elog(ERROR, "batchflow announcement after pre-commit");
	bf_announce_register_callbacks();
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc(sizeof(BfAnnPayload));
	p->text = pstrdup(payload);
	p->level = GetCurrentTransactionNestLevel();
	txn_payloads = lappend(txn_payloads, p);
	MemoryContextSwitchTo(old);
}

/*
 * batchflow._announce(payload text) returns void: bf_announce from SQL
 * (the progress triggers).  NULL is the empty payload, as for pg_notify.
 */
Datum
bf_sql_announce(PG_FUNCTION_ARGS)
{
	bf_announce(PG_ARGISNULL(0) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* Register the transaction callbacks, once per process. */
void
bf_announce_register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(bf_ann_xact_callback, NULL);
	RegisterSubXactCallback(bf_ann_subxact_callback, NULL);
	callbacks_registered = true;
}

/* Reserve at pre-commit, resolve at commit or abort. */
static void
bf_ann_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			bf_ann_pre_commit();
			txn_precommitted = true;
			break;
		case XACT_EVENT_COMMIT:
			bf_annq_commit();
			bf_ann_reset_txn();
			break;
		case XACT_EVENT_ABORT:
			bf_annq_abort();
			bf_ann_reset_txn();
			break;
		case XACT_EVENT_PRE_PREPARE:
			{
				/* NOTIFY makes PostgreSQL refuse to prepare: keep that. */
				char	  **p;
				int			n = bf_ann_unique(&p);

				for (int i = 0; i < n; i++)
					Async_Notify(BF_ANNOUNCE_CHANNEL, p[i]);
				txn_payloads = NIL;
				break;
			}
		case XACT_EVENT_PREPARE:
			bf_ann_reset_txn();
			break;
		default:
			break;
	}
}

/* A subtransaction's payloads go with it, or to its parent. */
static void
bf_ann_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, txn_payloads)
		{
			if (((BfAnnPayload *) lfirst(lc))->level >= level)
				txn_payloads = foreach_delete_current(txn_payloads, lc);
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, txn_payloads)
		{
			BfAnnPayload *p = lfirst(lc);

			if (p->level >= level)
				p->level = level - 1;
		}
	}
}

/* The transaction's payloads in order, each once (as NOTIFY does). */
static int
bf_ann_unique(char ***out)
{
	int			n = 0;
	ListCell   *lc;

	*out = palloc(sizeof(char *) * Max(list_length(txn_payloads), 1));
	foreach(lc, txn_payloads)
	{
		BfAnnPayload *p = lfirst(lc);
		bool		seen = false;

		for (int i = 0; i < n && !seen; i++)
			seen = strcmp((*out)[i], p->text) == 0;
		if (!seen)
			(*out)[n++] = p->text;
	}
	return n;
}

/*
 * Pre-commit: reserve one entry per payload in the database's queue if
 * its announcer runs and they fit; otherwise notify in this transaction
 * (and start an announcer for the next ones).
 */
static void
bf_ann_pre_commit(void)
{
	char	  **p;
	int			n;
	bool		served;
	bool		fits = true;
	bool		start = false;
	TimestampTz now;

	if (txn_payloads == NIL)
		return;
	n = bf_ann_unique(&p);
	served = (bf_database_served() == BF_SERVED);
	for (int i = 0; i < n; i++)
		fits &= strlen(p[i]) < BF_ANN_PAYLOAD;
	now = GetCurrentTimestamp();
	bf_annq_txn_begin();

	/* No other commit is notifying right now: notify here, at once. */
	if (!bf_debug_announce_queued && bf_ann_send_if_free(p, n))
		return;

	if (bf_annq_reserve(p, n, served, fits, now, &start))
		return;
	if (start)
		bf_announce_start(MyDatabaseId);
	bf_ann_send_now(p, n);
}

/*
 * The uncontended case: if no entry of this database reserved before now
 * is pending or being sent and PostgreSQL's notify lock is free, take
 * the lock (PreCommit_Notify then finds it held) and notify those entries
 * and this transaction's payloads here, as plain NOTIFY would: no delay,
 * no announcer transaction.  Otherwise false, holding nothing.  The lock
 * is only tried, never waited for, and is taken before the queue is
 * looked at again: a transaction that holds it never waits for an entry
 * (the announcer needs it to send them).
 */
static bool
bf_ann_send_if_free(char **p, int n)
{
	LOCKTAG		tag;
	uint64		before;
	char	  **queued;
	int			nqueued = 0;

	if (bf_annq_busy(&before))
		return false;

	/* The lock PreCommit_Notify takes (async.c), without waiting. */
	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, InvalidOid, 0);
	if (LockAcquire(&tag, AccessExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;

	queued = palloc(sizeof(char *) * BF_ANN_ENTRIES);
	if (!bf_annq_take_if_idle(before, queued, &nqueued))
	{
		LockRelease(&tag, AccessExclusiveLock, false);
		return false;
	}
	bf_ann_notify(queued, nqueued, p, n);
	return true;
}

/*
 * The fallback: once no entry of this database reserved before now is
 * pending or being sent, take those entries and notify them, then this
 * transaction's payloads.  Entries reserved meanwhile belong to
 * transactions concurrent with this one: they stay for the announcer (or
 * the next fallback), and are not waited for, so a steady stream of
 * them cannot hold this transaction back.
 */
static void
bf_ann_send_now(char **p, int n)
{
	char	  **queued = palloc(sizeof(char *) * BF_ANN_ENTRIES);
	int			nqueued = bf_annq_take_when_idle(queued);

	bf_ann_notify(queued, nqueued, p, n);
}

/*
 * NOTIFY the entries taken, then this transaction's payloads.  The
 * entries taken stay in place until this transaction ends, and no other
 * process writes them meanwhile: reading their text needs no lock.
 */
static void
bf_ann_notify(char **queued, int nqueued, char **p, int n)
{
	for (int i = 0; i < nqueued; i++)
		Async_Notify(BF_ANNOUNCE_CHANNEL, queued[i]);
	for (int i = 0; i < n; i++)
		Async_Notify(BF_ANNOUNCE_CHANNEL, p[i]);
}

/* Forget the transaction's part. */
static void
bf_ann_reset_txn(void)
{
	txn_payloads = NIL;
	txn_precommitted = false;
	bf_annq_txn_end();
}
