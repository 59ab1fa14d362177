/*-------------------------------------------------------------------------
 *
 * bigbatch.h
 *	  Big batches: loops whose items are materialised by the workers in
 *	  chunks behind the loop's start (query sources, large JSON arrays,
 *	  key ranges), and the per-loop throttles (maxItemsPerSecond,
 *	  maxReplicationLag).
 *
 *	  source_fill.c drives materialisation from the item workers,
 *	  source_drain.c is the background worker that holds a query's portal
 *	  open and streams its rows, source_keyranges.c computes key ranges,
 *	  throttle.c admits item starts, definition_bigbatch.c validates the
 *	  new definition properties.
 *
 * IDENTIFICATION
 *	  src/bigbatch.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_BIGBATCH_H
#define BATCHFLOW_BIGBATCH_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

/* The advisory-lock field4 of a loop's fill lock (slot locks use >= 16). */
#define BF_FILL_LOCK_FIELD 15

/* Messages from the drainer to the filling worker: first byte is the kind. */
#define BF_DRAIN_ROW		'R'	/* a jsonb item follows */
#define BF_DRAIN_ESTIMATE	'S'	/* a float8: the planner's row estimate */
#define BF_DRAIN_ERROR		'E'	/* a NUL-terminated message follows */
#define BF_DRAIN_DONE		'D'	/* no more rows */

/* The fixed part of the drainer's dynamic shared memory segment. */
typedef struct BfDrainHeader
{
	Oid			dboid;
	int64		loop_ref;
	int64		skip;			/* rows already materialised: skip them */
} BfDrainHeader;

/* source_fill.c: called by item workers, outside any transaction */
extern bool bf_fill_step(void);
extern void bf_fill_abandon(void);
extern bool bf_loop_filling(int64 loop_ref);

/* source_drain.c */
extern PGDLLEXPORT void bf_drain_main(Datum main_arg);

/* source_keyranges.c: one chunk of ranges, inside SPI, in a transaction */
extern bool bf_keyranges_chunk(int64 loop_ref);

/* throttle.c */
extern void bf_throttle_init(void);
extern bool bf_throttle_admit(int64 loop_ref, TimestampTz now, TimestampTz *due);
extern void bf_throttle_refund(int64 loop_ref);

/* definition_bigbatch.c */
extern void bf_check_query_source(JsonbContainer *src, const char *what);
extern void bf_check_keyranges_source(JsonbContainer *src, const char *what);
extern void bf_check_throttles(JsonbContainer *node, const char *what);
extern int64 bf_interval_usecs(const char *text);

/* definition.c */

#endif							/* BATCHFLOW_BIGBATCH_H */
