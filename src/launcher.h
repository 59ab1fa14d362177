/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher (launcher.c).
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

#endif							/* BATCHFLOW_LAUNCHER_H */
