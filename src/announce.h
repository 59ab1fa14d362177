/*-------------------------------------------------------------------------
 *
 * announce.h
 *	  NOTIFY batchflow_progress announcements sent after the commit by one
 *	  process per database: the transaction's side (announce.c).
 *
 * IDENTIFICATION
 *	  src/announce.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ANNOUNCE_H
#define BATCHFLOW_ANNOUNCE_H

#include "postgres.h"

#define BF_ANNOUNCE_CHANNEL "batchflow_progress"

extern void bf_announce_define_gucs(void);

/* Any transaction: announce this payload if and when it commits. */
extern void bf_announce(const char *payload);

/* The announcer: its transactions resolve the entries they took. */
extern void bf_announce_register_callbacks(void);

#endif							/* BATCHFLOW_ANNOUNCE_H */
