/*-------------------------------------------------------------------------
 *
 * db_shareout.h
 *	  The table of databases and slot loans (owned by databases.c, under
 *	  its LWLock) and the launcher's share-out policy over it
 *	  (db_shareout.c).
 *
 * IDENTIFICATION
 *	  src/db_shareout.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_DB_SHAREOUT_H
#define BATCHFLOW_DB_SHAREOUT_H

#include "postgres.h"

#include <sys/types.h>

#include "datatype/timestamp.h"

#include "databases.h"

/* One database the pool serves or is asked to serve. */
typedef struct BfDbEntry
{
	Oid			dboid;			/* InvalidOid: entry free */
	bool		wanted;			/* asks for one more worker */
	bool		blocked;		/* no worker until registered again */
	bool		recovered;		/* the first-visit recovery is done */
	pid_t		recovering;		/* worker running it, or 0 */
	TimestampTz last_sweep;
	TimestampTz backoff_until;	/* a worker died starting: wait */
} BfDbEntry;

/* What a worker slot is lent to. */
typedef struct BfSlotLend
{
	Oid			dboid;			/* InvalidOid: not lent */
	pid_t		pid;			/* the worker, once it attached */
	bool		idle;			/* waiting for work */
	bool		exit_requested; /* the launcher wants the slot back */
} BfSlotLend;

/* The table as the share-out sees it (the caller holds its lock). */
typedef struct BfDbTable
{
	BfDbEntry  *dbs;			/* BF_MAX_DATABASES of them */
	BfSlotLend *slots;			/* nslots of them */
	int			nslots;
	int		   *rr;				/* where the next share-out starts */
} BfDbTable;

extern int	bf_shareout(BfDbTable *t, const bool *alive, TimestampTz now,
						bool keep_full, BfStartOrder *orders,
						pid_t *to_signal, int *nsignal);

#endif							/* BATCHFLOW_DB_SHAREOUT_H */
