/*-------------------------------------------------------------------------
 *
 * run_control.h
 *	  Run control beyond start and wait: force cancel (force_cancel.c),
 *	  pause and resume, purge and unregister (run_control.c).
 *
 * IDENTIFICATION
 *	  src/run_control.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BF_RUN_CONTROL_H
#define BF_RUN_CONTROL_H

#include "batchflow.h"
#include "claim.h"

/*
 * SQL condition: the run with id expression "run" is paused.  The claim
 * statements leave out the running loops of such runs (claim.c,
 * short_items.c), so that nothing of a paused run starts.
 */
#define BF_RUN_PAUSED(run) \
	"EXISTS (SELECT 1 FROM batchflow.run r WHERE r.id = " run " AND r.status = 'paused')"

/* force_cancel.c: interrupting the executing items of a run */
extern Size bf_cancel_shmem_size(void);
extern void bf_cancel_shmem_startup(void);
extern void bf_cancel_worker_attach(int slotno);
extern void bf_cancel_note_claim(int64 run_id);
extern bool bf_cancel_requested(int64 run_id);
extern void bf_cancel_window_open(int64 run_id);
extern void bf_cancel_window_close(bool raise);
extern void bf_force_cancel_on_commit(int64 run_id);
extern void bf_force_cancel_descendants(int64 run_id);
extern BfOutcome bf_record_cancelled(BfClaim *claim);

/* run_control.c: retention of whole runs, the workflow-name hint */
extern int	bf_run_retention_s;
extern void bf_run_control_define_gucs(void);
extern void bf_run_retention_sweep(void);
extern char *bf_workflow_name_hint(const char *name, Oid caller);

#endif							/* BF_RUN_CONTROL_H */
