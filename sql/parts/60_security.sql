/*
 * batchflow install script, part 60: isolation between roles.
 *
 * Every table is readable by every role that has USAGE on schema batchflow,
 * and row-level security shows each role only the rows of its own
 * workflows and runs: those whose owner column is the role itself or a
 * role whose privileges it has.  Superusers bypass row-level security and
 * see everything; members of the role batchflow_admin (created by part 30
 * if it does not exist yet) see everything through the policies.  The
 * background workers connect as the bootstrap superuser, and the bf_*
 * functions write as the extension owner, who owns the tables: neither is
 * subject to the policies.
 *
 * Ordinary roles get SELECT only; every write goes through the bf_*
 * functions, which check ownership themselves (42501 for another role's
 * run).  So the only grant a role needs is
 *     GRANT USAGE ON SCHEMA batchflow TO alice;
 *
 * Tables that have no owner column of their own (loop, item, item_error,
 * the progress tables) follow their run: "run_id IN (SELECT id FROM
 * batchflow.run)" is evaluated with the policy of batchflow.run, and runs
 * as one hashed subplan per query rather than one lookup per row.
 */

-- Workflows and runs: keyed on their owner column.
ALTER TABLE batchflow.workflow ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_owner ON batchflow.workflow
    FOR SELECT USING (batchflow.visible(owner));

ALTER TABLE batchflow.workflow_version ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_version_owner ON batchflow.workflow_version
    FOR SELECT USING (batchflow.visible(owner));

ALTER TABLE batchflow.run ENABLE ROW LEVEL SECURITY;
CREATE POLICY run_owner ON batchflow.run
    FOR SELECT USING (batchflow.visible(owner));

-- Everything below a run: visible when its run is.
ALTER TABLE batchflow.loop ENABLE ROW LEVEL SECURITY;
CREATE POLICY loop_run_owner ON batchflow.loop
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.item ENABLE ROW LEVEL SECURITY;
CREATE POLICY item_run_owner ON batchflow.item
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.item_error ENABLE ROW LEVEL SECURITY;
CREATE POLICY item_error_run_owner ON batchflow.item_error
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.loop_progress ENABLE ROW LEVEL SECURITY;
CREATE POLICY loop_progress_run_owner ON batchflow.loop_progress
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.progress_counter ENABLE ROW LEVEL SECURITY;
CREATE POLICY progress_counter_run_owner ON batchflow.progress_counter
    FOR SELECT USING (loop_ref IN (SELECT l.id FROM batchflow.loop l));

ALTER TABLE batchflow.pruned_run ENABLE ROW LEVEL SECURITY;
CREATE POLICY pruned_run_run_owner ON batchflow.pruned_run
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

GRANT SELECT ON batchflow.workflow, batchflow.workflow_version, batchflow.run,
    batchflow.loop, batchflow.item, batchflow.item_error, batchflow.loop_progress,
    batchflow.progress_counter, batchflow.pruned_run TO PUBLIC;

/*
 * The views and the internal PL/pgSQL functions declare their security
 * attributes where they are created, so that a later CREATE OR REPLACE
 * keeps them:
 *
 *   - runs and items (part 30) are security_invoker: they read the tables
 *     with the rights of the role querying them, so the policies above
 *     apply to them as to the tables;
 *   - the progress views (parts 43 to 45) compute their rows from several
 *     tables and shared memory with their owner's rights and filter with
 *     batchflow.visible(); security_barrier makes that filter run before
 *     any condition of the querying role, so a function of that role (say,
 *     one that raises a NOTICE with its argument) never sees another
 *     role's rows;
 *   - the internal PL/pgSQL functions (batchflow._*) run as the extension
 *     owner or a worker, which pin search_path themselves; they pin it
 *     too (SET search_path = pg_catalog, pg_temp), so that no caller's
 *     search_path ever decides which function or operator they call.  The
 *     SQL ones are left alone so that they can still be inlined.
 */
