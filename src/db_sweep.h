/*-------------------------------------------------------------------------
 *
 * db_sweep.h
 *	  The sweep of one database by its item workers (db_sweep.c).
 *
 * IDENTIFICATION
 *	  src/db_sweep.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_DB_SWEEP_H
#define BATCHFLOW_DB_SWEEP_H

#include "postgres.h"

extern bool bf_db_sweep(bool recover);

#endif							/* BATCHFLOW_DB_SWEEP_H */
