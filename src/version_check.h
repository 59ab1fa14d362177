/*-------------------------------------------------------------------------
 *
 * version_check.h
 *	  Does the library match the version of the SQL objects installed in
 *	  this database? (version_check.c)
 *
 * IDENTIFICATION
 *	  src/version_check.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_VERSION_CHECK_H
#define BATCHFLOW_VERSION_CHECK_H

#include "postgres.h"

extern char *bf_installed_version(void);
extern void bf_check_sql_version(void);

#endif							/* BATCHFLOW_VERSION_CHECK_H */
