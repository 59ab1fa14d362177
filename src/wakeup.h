/*-------------------------------------------------------------------------
 *
 * wakeup.h
 *	  The idle list of item workers and targeted wake-ups (wakeup.c).
 *
 * IDENTIFICATION
 *	  src/wakeup.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BF_WAKEUP_H
#define BF_WAKEUP_H

#include "postgres.h"

#include "storage/latch.h"

struct BfClaim;

/* Why an idle worker was taken off the idle list. */
typedef enum BfWakeReason
{
	BF_WAKE_NONE = 0,			/* not woken by a waker (timeout, stray latch) */
	BF_WAKE_LEAD,				/* new work committed: claim, then wake helpers */
	BF_WAKE_HELPER,				/* woken by a lead for the work it found */
	BF_WAKE_DIRECT,				/* one of the workers a new loop can use */
	BF_WAKE_ALL					/* woken by a wake-all (launcher, bf_retry, bf_cancel) */
} BfWakeReason;

extern void bf_wakeup_shmem_request(void);
extern void bf_wakeup_shmem_startup(void);

/* Committers: wake idle workers of this database. */
extern void bf_wake_idle(int n, BfWakeReason reason);
extern void bf_wake_all_idle(void);
extern uint64 bf_work_generation(void);

/* Item workers: the idle protocol (see wakeup.c for the order of steps). */
extern void bf_idle_attach(int slotno, Latch *latch);
extern bool bf_idle_enter(uint64 looked_at_gen);
extern BfWakeReason bf_idle_leave(void);
extern void bf_wake_helpers(int nworkers);
extern int	bf_idle_count(void);
extern void bf_idle_claimed(const struct BfClaim *claim);
extern void bf_idle_step_done(void);
extern bool bf_idle_latch_is_foreign(int rc, uint64 looked_at_gen);
extern bool bf_idle_may_skip_look(int rc, uint64 looked_at_gen);

/* Set by claim.c: did the last look see a loop with work left? */
extern bool bf_claim_saw_work;

/* batchflow.debug_idle_delay: a pause before going idle, for tests only */
extern int	bf_debug_idle_delay_ms;
extern void bf_wakeup_define_gucs(void);

#endif							/* BF_WAKEUP_H */
