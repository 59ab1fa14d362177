/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher (launcher.c) and the launcher's sweeps of progress and
 *	  history (counter_rebuild.c, history_prune.c).
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

/* counter_rebuild.c */
extern void bf_counter_rebuild_sweep(void);

/* history_prune.c */
extern void bf_history_prune_sweep(void);

#endif							/* BATCHFLOW_LAUNCHER_H */
