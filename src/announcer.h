/*-------------------------------------------------------------------------
 *
 * announcer.h
 *	  The announcer process of a database (announcer.c).
 *
 * IDENTIFICATION
 *	  src/announcer.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ANNOUNCER_H
#define BATCHFLOW_ANNOUNCER_H

#include "postgres.h"

/* The announcer leaves after this long without an announcement. */
#define BF_ANNOUNCER_IDLE_MS 30000

extern PGDLLEXPORT void bf_announcer_main(Datum main_arg);

#endif							/* BATCHFLOW_ANNOUNCER_H */
