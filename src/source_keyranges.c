/*-------------------------------------------------------------------------
 *
 * source_keyranges.c
 *	  Items of a {"keyRanges": {"table", "key", "size"}} loop: ranges
 *	  {"from": k1, "to": k2} (from inclusive, to exclusive, to null on the
 *	  last) of about "size" rows each, computed as the loop goes.
 *
 *	  Boundaries come from keyset scans of the key's btree index (checked
 *	  at the loop's start by batchflow._lazy_loop): the first range starts
 *	  at the smallest key, and the next boundary after b is the size-th key
 *	  greater than b ("WHERE key > b ORDER BY key OFFSET size - 1 LIMIT
 *	  1"), so each boundary reads about size index entries, the whole loop
 *	  reads the index once, and consecutive ranges always make progress
 *	  even over duplicate keys.  The ranges are contiguous from the first
 *	  key to +infinity, so every row whose key is at least the first key is
 *	  in exactly one range, including rows inserted behind the scan.
 *
 *	  Only a few ranges are kept ahead of execution: a worker tops the loop
 *	  up when fewer than 2 x cap + 2 of its items are pending, so the
 *	  boundaries of a 100M-row table are never all computed up front.  The
 *	  scans run as the run's owner; the loop row is locked (SKIP LOCKED)
 *	  while one worker tops up, then its loop_fill row, as elsewhere.
 *
 * IDENTIFICATION
 *	  src/source_keyranges.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"

#include "batchflow.h"
#include "bigbatch.h"
#include "wake_commit.h"
#include "security.h"

#define BF_MAX_RANGES_PER_CHUNK 64

static SPIPlanPtr range_insert_plan = NULL;

/*
 * Top up a keyRanges loop (inside SPI, in a transaction of its own);
 * true if ranges were added or the last one was.
 */
bool
bf_keyranges_chunk(int64 loop_ref)
{
	Datum		arg = Int64GetDatum(loop_ref);
	Oid			argtype = INT8OID;
	bool		isnull;
	int			cap;
	int64		run_id;
	Oid			owner;
	int32		next_idx;
	char	   *next_key;
	Datum		next_from;
	char	   *first_sql;
	char	   *next_sql;
	int64		size;
	int			lookahead;
	int			pending;
	int			want;
	Datum	   *froms;
	Datum	   *tos;
	bool	   *to_nulls;
	int			n = 0;
	bool		done = false;
	BfSavedUser saved;
	HeapTuple	tup;
	TupleDesc	desc;

	if (SPI_execute_with_args("SELECT l.concurrency, l.run_id, r.owner"
							  "  FROM batchflow.loop l JOIN batchflow.run r ON r.id = l.run_id"
							  " WHERE l.id = $1 AND l.status = 'running' AND l.finished_at IS NULL"
							  "   FOR UPDATE OF l SKIP LOCKED",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	cap = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	run_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));

	lookahead = 2 * cap + 2;
	if (SPI_execute_with_args(psprintf("SELECT count(*)::int FROM (SELECT 1 FROM batchflow.item"
									   " WHERE loop_ref = $1 AND status = 'pending' LIMIT %d) s",
									   lookahead),
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the pending items of loop " INT64_FORMAT, loop_ref);
	pending = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (pending >= lookahead)
		return false;

	if (SPI_execute_with_args("SELECT next_idx, next_key, next_from, source ->> 'first',"
							  "       source ->> 'next', (source ->> 'size')::int8"
							  "  FROM batchflow.loop_fill WHERE loop_ref = $1 FOR UPDATE",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not lock loop_fill of loop " INT64_FORMAT, loop_ref);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	next_idx = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	next_key = SPI_getvalue(tup, desc, 2);
	next_from = SPI_getbinval(tup, desc, 3, &isnull);
	if (!isnull)
		next_from = datumCopy(next_from, false, -1);
	first_sql = SPI_getvalue(tup, desc, 4);
	next_sql = SPI_getvalue(tup, desc, 5);
	size = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));

	want = Min(2 * lookahead - pending, BF_MAX_RANGES_PER_CHUNK);
	froms = palloc(sizeof(Datum) * want);
	tos = palloc(sizeof(Datum) * want);
	to_nulls = palloc(sizeof(bool) * want);

	bf_become_run_owner(owner, run_id, &saved);
	if (next_key == NULL)
	{
		/* The first range starts at the smallest key. */
		if (SPI_execute(first_sql, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the first key of loop " INT64_FORMAT, loop_ref);
		if (SPI_processed == 0)
			done = true;		/* an empty table: no items */
		else
		{
			next_key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			next_from = datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
												&isnull), false, -1);
		}
	}
	while (!done && n < want)
	{
		Oid			types[2] = {TEXTOID, INT8OID};
		Datum		args[2] = {CStringGetTextDatum(next_key), Int64GetDatum(size - 1)};

		if (SPI_execute_with_args(next_sql, 2, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not scan the keys of loop " INT64_FORMAT, loop_ref);
		froms[n] = next_from;
		if (SPI_processed == 0)
		{
			tos[n] = (Datum) 0;
			to_nulls[n] = true;
			done = true;
		}
		else
		{
			next_key = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			next_from = datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
												&isnull), false, -1);
			tos[n] = next_from;
			to_nulls[n] = false;
		}
		n++;
	}
	bf_restore_after_activity(&saved);

	if (n > 0)
	{
		Oid			types[5] = {INT8OID, INT4OID, INT8OID, JSONBARRAYOID, JSONBARRAYOID};
		Datum		args[5];
		int			dims[1] = {n};
		int			lbs[1] = {1};

		if (range_insert_plan == NULL)
		{
			range_insert_plan = SPI_prepare("INSERT INTO batchflow.item (loop_ref, idx, run_id, item)"
											" SELECT $1, $2 + (u.o - 1)::int, $3,"
											"        jsonb_build_object('from', u.f, 'to', u.t)"
											"   FROM unnest($4, $5) WITH ORDINALITY AS u(f, t, o)",
											5, types);
			if (range_insert_plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(range_insert_plan);
		}
		args[0] = arg;
		args[1] = Int32GetDatum(next_idx);
		args[2] = Int64GetDatum(run_id);
		args[3] = PointerGetDatum(construct_array(froms, n, JSONBOID, -1, false, TYPALIGN_INT));
		args[4] = PointerGetDatum(construct_md_array(tos, to_nulls, 1, dims, lbs,
													 JSONBOID, -1, false, TYPALIGN_INT));
		if (SPI_execute_plan(range_insert_plan, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert the ranges of loop " INT64_FORMAT, loop_ref);
	}

	{
		Oid			types[4] = {INT8OID, INT4OID, TEXTOID, JSONBOID};
		Datum		args[4];
		char		nulls[4] = {' ', ' ', next_key ? ' ' : 'n', next_key ? ' ' : 'n'};

		args[0] = arg;
		args[1] = Int32GetDatum(next_idx + n);
		args[2] = next_key ? CStringGetTextDatum(next_key) : (Datum) 0;
		args[3] = next_key ? next_from : (Datum) 0;
		if (SPI_execute_with_args(done
								  ? "DELETE FROM batchflow.loop_fill WHERE loop_ref = $1"
								  "   AND $2 >= 0 AND ($3 IS NULL OR $4 IS NULL OR true)"
								  : "UPDATE batchflow.loop_fill"
								  "   SET next_idx = $2, next_key = $3, next_from = $4"
								  " WHERE loop_ref = $1",
								  4, types, args, nulls, false, 0) < 0 ||
			SPI_execute_with_args("UPDATE batchflow.loop SET total = $2 WHERE id = $1",
								  2, types, args, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the ranges of loop " INT64_FORMAT, loop_ref);
	}
	if (n > 0 || done)
		bf_wake_on_commit();
	return n > 0 || done;
}
