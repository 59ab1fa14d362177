/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher (launcher.c) and how it finds the databases to serve
 *	  (launcher_db.c).
 *
 * IDENTIFICATION
 *	  src/launcher.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_LAUNCHER_H
#define BATCHFLOW_LAUNCHER_H

#include "postgres.h"

extern void bf_register_launcher(void);
extern PGDLLEXPORT void bf_launcher_main(Datum main_arg);

/* launcher_db.c */
extern void bf_launcher_find_databases(void);

#endif							/* BATCHFLOW_LAUNCHER_H */
