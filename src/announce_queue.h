/*-------------------------------------------------------------------------
 *
 * announce_queue.h
 *	  The shared queue of NOTIFY batchflow_progress announcements
 *	  (announce_queue.c): its layout, shared with the announcer's side
 *	  (announce_sender.c), and what a committing transaction does with it
 *	  (announce.c).
 *
 * IDENTIFICATION
 *	  src/announce_queue.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ANNOUNCE_QUEUE_H
#define BATCHFLOW_ANNOUNCE_QUEUE_H

#include "postgres.h"

#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

/* Sizes of the shared queue. */
#define BF_ANN_ENTRIES 1024
#define BF_ANN_PAYLOAD 496		/* longer payloads take the fallback */
#define BF_ANN_DBS 32

typedef enum BfAnnState
{
	BF_ANN_FREE = 0,
	BF_ANN_PENDING,				/* reserved; its transaction is committing */
	BF_ANN_READY,				/* to send (or to drop, if cancelled) */
	BF_ANN_SENDING				/* in a sending transaction not ended yet */
} BfAnnState;

typedef enum BfSenderState
{
	BF_SENDER_NONE = 0,
	BF_SENDER_STARTING,			/* registered, not attached yet */
	BF_SENDER_RUNNING,			/* takes reservations */
	BF_SENDER_LEAVING			/* sends what is queued, takes no more */
} BfSenderState;

typedef struct BfAnnEntry
{
	uint64		seq;			/* order of reservation, all databases */
	int32		next;			/* next of its queue or of the free list */
	uint8		state;			/* BfAnnState */
	bool		cancelled;		/* its transaction aborted: nothing to send */
	uint16		len;
	char		payload[BF_ANN_PAYLOAD];
} BfAnnEntry;

typedef struct BfAnnDb
{
	Oid			dboid;			/* InvalidOid: slot unused */
	int32		head;			/* queue of entries, oldest first */
	int32		tail;
	int32		nqueued;
	uint8		sender;			/* BfSenderState */
	uint8		failed_starts;	/* in a row */
	pid_t		sender_pid;
	Latch	   *sender_latch;
	TimestampTz starting_since;
	TimestampTz no_start_until;
} BfAnnDb;

typedef struct BfAnnShared
{
	ConditionVariable resolved;
	uint64		next_seq;
	int32		free_head;
	int32		nfree;
	BfAnnDb		dbs[BF_ANN_DBS];
	BfAnnEntry	entries[BF_ANN_ENTRIES];
} BfAnnShared;

extern PGDLLIMPORT BfAnnShared *BfAnn;
extern PGDLLIMPORT LWLock *BfAnnLock;

extern void bf_announce_shmem_request(void);
extern void bf_announce_shmem_startup(void);

/* A committing transaction (announce.c). */
extern bool bf_annq_exists(void);
extern void bf_annq_txn_begin(void);
extern bool bf_annq_busy(uint64 *before);
extern bool bf_annq_take_if_idle(uint64 before, char **queued, int *nqueued);
extern int	bf_annq_take_when_idle(char **queued);
extern bool bf_annq_reserve(char **texts, int n, bool served, bool fits,
							TimestampTz now, bool *start);
extern void bf_annq_commit(void);
extern void bf_annq_abort(void);
extern void bf_annq_txn_end(void);

/* The announcer's side (announce_sender.c); all called with BfAnnLock. */
extern BfAnnDb *bf_ann_db(Oid dboid, bool add, TimestampTz now);
extern void bf_ann_db_forget_if_idle(BfAnnDb *db, TimestampTz now);
extern bool bf_ann_start_due(BfAnnDb *db, TimestampTz now);
extern bool bf_ann_queue_busy(BfAnnDb *db, uint64 before);
extern void bf_ann_pop(BfAnnDb *db);
extern void bf_ann_taken_ready(void);
extern void bf_ann_took(int32 e);

#endif							/* BATCHFLOW_ANNOUNCE_QUEUE_H */
