/*-------------------------------------------------------------------------
 *
 * announce.h
 *	  NOTIFY batchflow_progress announcements sent after the commit by one
 *	  process per database (announce.c, announcer.c).
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

/* The announcer leaves after this long without an announcement. */
#define BF_ANNOUNCER_IDLE_MS 30000

extern void bf_announce_define_gucs(void);
extern void bf_announce_shmem_request(void);
extern void bf_announce_shmem_startup(void);

/* Any transaction: announce this payload if and when it commits. */
extern void bf_announce(const char *payload);

/* DROP DATABASE and the like: the database's announcer leaves. */
extern void bf_announce_release(Oid dboid);

/* The launcher: a new announcer where one died with entries queued. */
extern void bf_announce_rescue(void);

/* The announcer process (announcer.c). */
extern void bf_announce_sender_starting(Oid dboid);
extern bool bf_announce_sender_attach(Oid dboid);
extern int	bf_announce_take(char ***payloads, bool *leave);
extern bool bf_announce_sender_idle_exit(void);
extern bool bf_announce_start_sender(Oid dboid);
extern PGDLLEXPORT void bf_announcer_main(Datum main_arg);

#endif							/* BATCHFLOW_ANNOUNCE_H */
