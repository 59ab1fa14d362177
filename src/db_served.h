/*-------------------------------------------------------------------------
 *
 * db_served.h
 *	  Is the current database served by the worker pool (db_served.c).
 *
 * IDENTIFICATION
 *	  src/db_served.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_DB_SERVED_H
#define BATCHFLOW_DB_SERVED_H

#include "postgres.h"

/* Why a database is not served (bf_database_served). */
typedef enum BfUnserved
{
	BF_SERVED = 0,
	BF_UNSERVED_NOT_PRELOADED,	/* no pool at all */
	BF_UNSERVED_OTHER_DATABASE, /* batchflow.database_name names another */
	BF_UNSERVED_TEMPLATE		/* template databases are never served */
} BfUnserved;

extern BfUnserved bf_database_served(void);
extern void bf_warn_if_unserved(const char *what);
extern void bf_error_if_unserved(int64 run_id);

#endif							/* BATCHFLOW_DB_SERVED_H */
