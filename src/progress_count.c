/*-------------------------------------------------------------------------
 *
 * progress_count.c
 *	  Batched progress counters, counted by the item workers.
 *
 *	  Counting every item in a shared row would make every item transaction
 *	  wait for the previous one's commit.  Instead each worker counts the
 *	  items it finishes in shared memory (its slot's "pending" counts) and
 *	  writes them to its own row of batchflow.progress_counter, keyed by
 *	  (loop, worker slot), every batchflow.progress_batch_items items or
 *	  batchflow.progress_interval, whichever comes first, and whenever it
 *	  runs out of work.  The write is one statement in the transaction of
 *	  the item that triggers it, so it costs no commit of its own, and no
 *	  two workers ever update the same row.  The same write announces the
 *	  progress of a running loop with NOTIFY batchflow_progress, at most
 *	  once per loop per batchflow.progress_interval.  A payload computed in
 *	  the worker's transaction counts the items it just recorded as ended,
 *	  not as active as well (bf_progress_shown_ended).  It first locks
 *	  the loop row FOR KEY SHARE SKIP LOCKED, so that the close of the
 *	  loop (FOR UPDATE) commits after it: a loop's last payload is its
 *	  close's, never a 'running' one from a snapshot taken before it.
 *	  (The payload is sent after the commit by the database's announcer,
 *	  in the order the transactions passed pre-commit: announce.c.)
 *
 *	  Exactness: pending counts change only when a transaction commits
 *	  (an XactCallback), so counters + pending = items finished, at every
 *	  instant, whatever aborts.  Pending counts live in shared memory and
 *	  outlive a worker that exits; the next worker of the slot writes
 *	  them.  A crash wipes shared memory, so then the launcher rebuilds the
 *	  counters of every open loop from batchflow.item (history.c), and the
 *	  views count from batchflow.item until it has done so.  The rebuild
 *	  must not race with workers that count: while it runs, workers take
 *	  the "reconcile" lock in share mode before they count an item, and
 *	  the launcher takes it in exclusive mode, after waiting for every
 *	  transaction that counted without the lock to end.
 *
 *	  A reader adds the counters it sees in its snapshot to the pending
 *	  counts it reads in shared memory a moment later; a write that
 *	  commits in between would be counted twice or not at all.  So each
 *	  slot remembers its last write (transaction id, amounts, whether the
 *	  commit callback applied it), and the reader corrects by that batch
 *	  (bf_progress_slot_pending); bf_progress also re-reads when any write
 *	  happened during its query (moves_begun/moves_done).
 *
 *	  The same commit callback keeps, per loop, a ring of (time, items
 *	  done) samples from which the views compute the recent rate.
 *
 *	  Entry points: bf_progress_count (one per attempt, with its outcome,
 *	  from bf_record_result), bf_progress_flush (once per worker
 *	  transaction), bf_progress_discard_on_commit (the launcher's rebuild).
 *	  The shared state itself lives in progress_shared.c.
 *
 * IDENTIFICATION
 *	  src/progress_count.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "announce.h"
#include "claim.h"
#include "pool.h"
#include "progress.h"
#include "progress_shared.h"
#include "spi_util.h"

/* Field 4 of the reconcile lock's advisory tag; cap locks use >= 16. */
#define BF_RECONCILE_LOCK_FIELD4 8
#define BF_RECONCILE_LOCK_KEY	 0x62667072 /* "bfpr" */

bool		bf_track_progress = true;
int			bf_progress_batch_items = BF_DEFAULT_PROGRESS_BATCH;
int			bf_progress_interval_ms = BF_DEFAULT_PROGRESS_MS;
int			bf_history_retention_s = BF_DEFAULT_RETENTION_S;

/* Read by batchflow.stuck_runs through current_setting(), not in C. */
static int	bf_stalled_after_s = BF_DEFAULT_STALLED_S;
static double bf_slow_item_factor = BF_DEFAULT_SLOW_FACTOR;

/* This worker's slot, found on first use; -2 = not a worker. */
static int	my_slotno = -1;

/* What the current transaction counted and wrote, applied at commit. */
static bool xact_callback_registered = false;
static bool txn_active = false;		/* entered: counted or wrote */
static bool txn_locked = false;		/* holds the reconcile lock */
static int	txn_ndelta = 0;
static int32 txn_items = 0;
static BfCount txn_delta[BF_PENDING_LOOPS];
static bool txn_delta_overflow = false;
static bool txn_flushed = false;	/* wrote pending + delta to the counters */
static bool txn_move_begun = false; /* counted in moves_begun at pre-commit */
static int	txn_nflushed = 0;
static BfCount txn_flushed_pending[BF_PENDING_LOOPS];

/*
 * Items this transaction recorded as ended that this worker's slot still
 * shows as executing (it is cleared only after the commit), and which
 * publication of the slot they belong to.  A payload or view computed in
 * this transaction counts them as ended, so it must not count them as
 * active too (bf_progress_shown_ended).
 */
static int32 txn_ended_shown = 0;
static int32 txn_shown_idx = -1;
static TimestampTz txn_shown_at = 0;

/* Launcher: pending counts to discard when its rebuild commits. */
static bool discard_at_commit = false;
static bool discard_all = false;
static int64 *discard_loops = NULL;
static int	discard_n = 0;

static SPIPlanPtr flush_plan = NULL;
static SPIPlanPtr notify_plan = NULL;
static SPIPlanPtr notify_lock_plan = NULL;

static bool bf_progress_attach(void);
static void bf_progress_enter(void);
static void bf_progress_note_shown(const BfClaim *claim);
static void bf_progress_write(TimestampTz now);
static void bf_progress_xact_callback(XactEvent event, void *arg);
static void bf_progress_at_commit(void);
static void bf_progress_reset_txn(void);
static void bf_progress_register_callback(void);

/* Declare the progress and history GUCs (from _PG_init, in every backend). */
void
bf_progress_define_gucs(void)
{
	DefineCustomBoolVariable("batchflow.track_progress",
							 "Count finished items for the progress views and notifications.",
							 "Off, the workers count nothing and the progress views count items in batchflow.item instead, which is slower for large loops.",
							 &bf_track_progress,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.progress_batch_items",
							"A worker writes its progress counts after this many items.",
							"Or after batchflow.progress_interval, whichever comes first.",
							&bf_progress_batch_items,
							BF_DEFAULT_PROGRESS_BATCH, 1, BF_MAX_PROGRESS_BATCH,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.progress_interval",
							"Longest time a worker keeps progress counts before writing them.",
							"Also the shortest time between two progress notifications of one loop.",
							&bf_progress_interval_ms,
							BF_DEFAULT_PROGRESS_MS, 10, BF_MAX_PROGRESS_MS,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.history_retention",
							"How long the items of finished runs are kept.",
							"The launcher deletes the items and item errors of runs finished longer ago, in small batches; runs, loops and their final counts stay.  0 keeps them forever.",
							&bf_history_retention_s,
							BF_DEFAULT_RETENTION_S, 0, BF_MAX_RETENTION_S,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batchflow.stalled_after",
							"batchflow.stuck_runs lists a running loop as stalled when no item ended for this long.",
							NULL,
							&bf_stalled_after_s,
							BF_DEFAULT_STALLED_S, 1, BF_MAX_RETENTION_S,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomRealVariable("batchflow.slow_item_factor",
							 "batchflow.stuck_runs lists an item executing for more than this many times its loop's p95 item duration.",
							 NULL,
							 &bf_slow_item_factor,
							 BF_DEFAULT_SLOW_FACTOR, 1.0, 1000000.0,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
}

/* The tag of the lock that serialises counting with the launcher's rebuild. */
void
bf_progress_lock_tag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, BF_RECONCILE_LOCK_KEY, 0,
						 BF_RECONCILE_LOCK_FIELD4);
}

/* Find this worker's slot; false if this process is not an item worker. */
static bool
bf_progress_attach(void)
{
	if (my_slotno >= 0)
		return true;
	if (my_slotno == -2 || !bf_progress_exists())
		return false;
	my_slotno = bf_pool_my_slot();
	if (my_slotno < 0 || my_slotno >= bf_progress_nslots())
	{
		my_slotno = -2;
		return false;
	}
	return true;
}

/* Have bf_progress_xact_callback called at the end of every transaction. */
static void
bf_progress_register_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(bf_progress_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * First counting or writing of this transaction: announce it (so that a
 * rebuild waits for it), or, when a rebuild is starting or running, take
 * the reconcile lock in share mode instead.
 */
static void
bf_progress_enter(void)
{
	if (txn_active)
		return;
	bf_progress_register_callback();
	txn_active = true;

	bf_pending_set_unlocked(my_slotno, true);
	pg_memory_barrier();
	if (bf_progress_rebuilding())
	{
		LOCKTAG		tag;

		/*
		 * Withdraw the announcement first: the rebuild must not wait for a
		 * transaction that waits for it.  This one counts under the lock.
		 */
		bf_pending_set_unlocked(my_slotno, false);
		bf_progress_lock_tag(&tag);
		(void) LockAcquire(&tag, ShareLock, false, false);
		txn_locked = true;
	}
}

/*
 * Count the attempt of claim that bf_record_result just recorded with the
 * given outcome, in the same transaction, before anything that announces
 * progress.  The one entry point of progress counting: every path that
 * gives an item its final status (succeeded or failed) passes here.  An
 * attempt that will be retried counts nothing.  The count takes effect
 * when the transaction commits.
 */
void
bf_progress_count(const BfClaim *claim, BfOutcome outcome)
{
	bool		ok = outcome == BF_OUTCOME_SUCCEEDED;

	if (outcome == BF_OUTCOME_WILL_RETRY || !bf_progress_attach())
		return;

	bf_progress_note_shown(claim);
	/* Skipped by a force cancel: its loop is counted from batchflow.item. */
	if (outcome == BF_OUTCOME_CANCELLED)
		return;
	if (!bf_track_progress)
	{
		bf_progress_note_uncounted();
		return;
	}

	bf_progress_enter();
	bf_count_add(txn_delta, &txn_ndelta, BF_PENDING_LOOPS, claim->loop->loop_ref,
				 ok ? 1 : 0, ok ? 0 : 1, &txn_delta_overflow);
	txn_items++;
}

/*
 * The item of claim was just given a final status in this transaction: if
 * this worker's slot shows it as executing, remember that it does so no
 * longer.  The slot shows either one item (idx >= 0: that item) or an
 * HTTP batch (idx = -1: the items claimed by the time it was published,
 * started_at).  A new publication of the slot starts the count afresh.
 */
static void
bf_progress_note_shown(const BfClaim *claim)
{
	BfWorkerView w;

	if (!bf_pool_read(my_slotno, &w) || w.pid != MyProcPid || w.run_id == 0 ||
		w.loop_ref != claim->loop->loop_ref ||
		!(w.idx >= 0 ? w.idx == claim->idx : claim->started_at <= w.started_at))
		return;

	bf_progress_register_callback();
	if (w.idx != txn_shown_idx || w.started_at != txn_shown_at)
	{
		txn_ended_shown = 0;
		txn_shown_idx = w.idx;
		txn_shown_at = w.started_at;
	}
	txn_ended_shown++;
}

/*
 * How many of the items that worker slot slotno shows as executing (its
 * publication idx, started_at) the current transaction has already
 * recorded as ended: nonzero only in the worker's own transaction, whose
 * snapshot counts them as ended.
 */
int32
bf_progress_shown_ended(int slotno, int32 idx, TimestampTz started_at)
{
	if (slotno != my_slotno || txn_ended_shown == 0)
		return 0;
	if (idx != txn_shown_idx || started_at != txn_shown_at)
		return 0;
	return txn_ended_shown;
}

/*
 * Write the pending counts if they are due (called once per worker
 * transaction, inside SPI, before it commits): after
 * batchflow.progress_batch_items items, after batchflow.progress_interval,
 * and when the worker found nothing to do.
 */
void
bf_progress_flush(void)
{
	int			npending;
	int32		items_pending;
	TimestampTz first_pending;
	TimestampTz now;
	bool		due;

	if (!bf_track_progress || !bf_progress_attach())
		return;

	bf_pending_state(my_slotno, &npending, &items_pending, &first_pending);
	if (npending == 0 && txn_ndelta == 0)
		return;

	now = GetCurrentTimestamp();
	if (txn_ndelta == 0)
		due = true;				/* idle: write what waits */
	else if (items_pending + txn_items >= bf_progress_batch_items)
		due = true;
	else if (npending > 0 &&
			 TimestampDifferenceExceeds(first_pending, now, bf_progress_interval_ms))
		due = true;
	else
		due = npending + txn_ndelta > BF_PENDING_LOOPS / 2;
	if (!due)
		return;

	bf_progress_enter();
	if (txn_locked)
		return;					/* a rebuild is running: write later */
	bf_progress_write(now);
}

/* Write pending + this transaction's counts to the counters, and notify. */
static void
bf_progress_write(TimestampTz now)
{
	static const Oid flush_types[4] = {INT4OID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
	static const Oid notify_types[1] = {INT8OID};
	BfCount		all[BF_PENDING_LOOPS * 2];
	int			nall = 0;
	bool		overflow = false;
	Datum	   *loops;
	Datum	   *completed;
	Datum	   *failed;
	Datum		args[4];
	int			rc;

	bf_keep_plan(&flush_plan,
				 "INSERT INTO batchflow.progress_counter AS c"
				 "   (loop_ref, slot, completed, failed, updated_at)"
				 " SELECT d.loop_ref, $1, d.completed, d.failed, clock_timestamp()"
				 "   FROM unnest($2, $3, $4) AS d(loop_ref, completed, failed)"
				 "   JOIN batchflow.loop_progress p"
				 "     ON p.loop_ref = d.loop_ref AND p.state = 'live'"
				 " ON CONFLICT (loop_ref, slot) DO UPDATE"
				 "   SET completed = c.completed + excluded.completed,"
				 "       failed = c.failed + excluded.failed,"
				 "       updated_at = excluded.updated_at",
				 4, flush_types);

	/*
	 * Only a running loop: a failed or cancelled one is announced by the
	 * triggers when its status changes and when it closes, and the counts
	 * written here are already in those payloads.  The loop row is locked
	 * first (FOR KEY SHARE, which only _close_loop's FOR UPDATE conflicts
	 * with): a close cannot commit before this transaction, so no
	 * 'running' payload is delivered after the close's final one.  A loop
	 * being closed right now, or closed since this statement's snapshot,
	 * is skipped, without waiting.
	 */
	bf_keep_plan(&notify_lock_plan,
				 "SELECT 1 FROM batchflow.loop"
				 " WHERE id = $1 AND status = 'running'"
				 " FOR KEY SHARE SKIP LOCKED",
				 1, notify_types);
	bf_keep_plan(&notify_plan,
				 "SELECT batchflow._progress_json($1)",
				 1, notify_types);

	txn_nflushed = bf_pending_copy(my_slotno, txn_flushed_pending);
	for (int i = 0; i < txn_nflushed; i++)
		bf_count_add(all, &nall, lengthof(all), txn_flushed_pending[i].loop_ref,
					 txn_flushed_pending[i].completed, txn_flushed_pending[i].failed,
					 &overflow);
	for (int i = 0; i < txn_ndelta; i++)
		bf_count_add(all, &nall, lengthof(all), txn_delta[i].loop_ref,
					 txn_delta[i].completed, txn_delta[i].failed, &overflow);

	loops = palloc(sizeof(Datum) * Max(nall, 1));
	completed = palloc(sizeof(Datum) * Max(nall, 1));
	failed = palloc(sizeof(Datum) * Max(nall, 1));
	for (int i = 0; i < nall; i++)
	{
		loops[i] = Int64GetDatum(all[i].loop_ref);
		completed[i] = Int64GetDatum(all[i].completed);
		failed[i] = Int64GetDatum(all[i].failed);
	}
	args[0] = Int32GetDatum(my_slotno);
	args[1] = PointerGetDatum(construct_array(loops, nall, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = PointerGetDatum(construct_array(completed, nall, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(failed, nall, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	rc = SPI_execute_plan(flush_plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not write progress counters: %s", SPI_result_code_string(rc));
	txn_flushed = true;

	/* Announce, at most once per loop per progress interval. */
	for (int i = 0; i < nall; i++)
	{
		if (bf_rate_announce_due(all[i].loop_ref, now, bf_progress_interval_ms))
		{
			Datum		arg = Int64GetDatum(all[i].loop_ref);
			char	   *payload;

			rc = SPI_execute_plan(notify_lock_plan, &arg, NULL, false, 0);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "could not lock loop for progress: %s", SPI_result_code_string(rc));
			if (SPI_processed == 0)
				continue;
			rc = SPI_execute_plan(notify_plan, &arg, NULL, false, 1);
			if (rc != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "could not compute progress: %s", SPI_result_code_string(rc));
			payload = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			bf_announce(payload != NULL ? payload : "");
		}
	}
}

/*
 * The slot whose pending counts are already in the counters this
 * transaction wrote (so that readers in it do not count them twice), or
 * -1.
 */
int
bf_progress_written_slot(void)
{
	return txn_flushed ? my_slotno : -1;
}

/* At commit, make this transaction's counts pending and sample the rates. */
static void
bf_progress_at_commit(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		overflow = txn_delta_overflow;

	bf_pending_commit(my_slotno, txn_flushed, txn_flushed_pending, txn_nflushed,
					  txn_delta, txn_ndelta, txn_items, now, &overflow);
	if (overflow)
		bf_progress_note_uncounted();
	bf_rate_record(txn_delta, txn_ndelta, now);
}

/* Forget the current transaction's counting state. */
static void
bf_progress_reset_txn(void)
{
	txn_active = txn_locked = txn_flushed = txn_delta_overflow = false;
	txn_move_begun = false;
	txn_ndelta = txn_nflushed = 0;
	txn_items = 0;
	txn_ended_shown = 0;
	txn_shown_idx = -1;
	txn_shown_at = 0;
}

/*
 * At commit: apply the transaction's counts, or the launcher's discard; at
 * abort: forget them.  Runs before the transaction's locks are released.
 */
static void
bf_progress_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			/* About to move counts from shared memory to the tables. */
			if ((txn_flushed || discard_at_commit) && bf_progress_exists())
			{
				bf_progress_move_begin();
				txn_move_begun = true;
			}
			if (txn_flushed && my_slotno >= 0)
				bf_pending_flush_begin(my_slotno, GetTopTransactionIdIfAny(),
									   txn_flushed_pending, txn_nflushed);
			break;
		case XACT_EVENT_COMMIT:
			if (txn_active && my_slotno >= 0)
				bf_progress_at_commit();
			if (discard_at_commit)
			{
				if (discard_all)
					bf_pending_discard(NULL, -1);
				else
					bf_pending_discard(discard_loops, discard_n);
			}
			if (txn_move_begun)
				bf_progress_move_done();
			bf_progress_reset_txn();
			discard_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
			if (txn_active && my_slotno >= 0)
				bf_pending_abort(my_slotno, txn_flushed);
			if (txn_move_begun)
				bf_progress_move_done();
			bf_progress_reset_txn();
			discard_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * Ask for the pending counts of the given loops (all, for n < 0) to be
 * discarded when the current transaction commits: it rebuilt their
 * counters from batchflow.item (counter_rebuild.c).  The array must live
 * until then.
 */
void
bf_progress_discard_on_commit(int64 *loops, int n)
{
	bf_progress_register_callback();
	discard_at_commit = true;
	discard_all = n < 0;
	discard_loops = loops;
	discard_n = n;
}
