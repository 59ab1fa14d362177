/*-------------------------------------------------------------------------
 *
 * announce_sender.h
 *	  The announcer's side of the shared queue of announcements
 *	  (announce_sender.c): starting, attaching, taking, leaving.
 *
 * IDENTIFICATION
 *	  src/announce_sender.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ANNOUNCE_SENDER_H
#define BATCHFLOW_ANNOUNCE_SENDER_H

#include "postgres.h"

/* Start the database's announcer (a transaction that found none). */
extern void bf_announce_start(Oid dboid);

/* DROP DATABASE and the like: the database's announcer leaves. */
extern void bf_announce_release(Oid dboid);

/* The launcher: a new announcer where one died with entries queued. */
extern void bf_announce_rescue(void);

/* The announcer process (announcer.c). */
extern void bf_announce_sender_starting(Oid dboid);
extern bool bf_announce_sender_attach(Oid dboid);
extern int	bf_announce_take(char ***payloads, bool *leave);
extern bool bf_announce_sender_idle_exit(void);

#endif							/* BATCHFLOW_ANNOUNCE_SENDER_H */
