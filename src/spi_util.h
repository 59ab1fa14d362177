/*-------------------------------------------------------------------------
 *
 * spi_util.h
 *	  The SPI patterns of the background files: a statement prepared once
 *	  per process and kept (and run with chosen planner methods off), and
 *	  the transaction bracket (transaction, SPI, snapshot) around a piece of
 *	  bookkeeping.
 *
 * IDENTIFICATION
 *	  src/spi_util.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_SPI_UTIL_H
#define BATCHFLOW_SPI_UTIL_H

#include "postgres.h"

#include "executor/spi.h"

extern SPIPlanPtr bf_keep_plan(SPIPlanPtr *plan, const char *sql,
							   int nargs, const Oid *types);
extern void bf_txn_begin(const char *activity);
extern void bf_txn_end(void);
extern int	bf_planner_off_begin(const char *const *off, int noff);
extern void bf_planner_off_end(int nest);
extern int	bf_execute_plan_without(SPIPlanPtr plan, Datum *args, const char *nulls,
									const char *const *off, int noff);

#endif							/* BATCHFLOW_SPI_UTIL_H */
