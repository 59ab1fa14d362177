-- Run control seen from SQL: the dashboard's lines for a running, a
-- paused, a cancelled and a failed-on-input run, bf_progress of a paused
-- run, force cancel of an item blocked in its statement, bf_purge,
-- bf_unregister and batchflow.workflows.  The runs belong to a role of
-- their own, so the dashboard (which shows a role its own runs) lists
-- exactly these, whatever the other tests left behind.
CREATE ROLE bf_rc_user;
GRANT USAGE ON SCHEMA batchflow TO bf_rc_user;
SET ROLE bf_rc_user;

-- Each item waits for a shared lock on advisory key 4242 (this session
-- holds it exclusively while a run must stay running).
SELECT bf_register('rc_block', $${"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential", "inputSource": {"variable": "items"},
   "children": [{"id": "w", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_advisory_xact_lock_shared(4242), $1"}]}]}$$) > 0 AS registered;
-- A first activity whose output is not an array feeds the loop: the run
-- fails when it reaches the loop.
SELECT bf_register('rc_input', $${"nodes": [
  {"id": "count", "type": "activity", "activity": "sql", "sql": "SELECT 5"},
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"activity": "count"},
   "children": [{"id": "w", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}]}$$) > 0 AS registered;

SELECT bf_start('rc_input') AS failed_run \gset
SELECT bf_wait(:failed_run, '1 minute');

-- Cancelled and paused in the transaction that starts them: no worker
-- ever runs an item of either.
BEGIN;
SELECT bf_start('rc_block', '{"items": [1, 2, 3, 4]}') AS cancelled_run \gset
SELECT bf_cancel(:cancelled_run);
COMMIT;
SELECT r AS paused_run FROM bf_start('rc_block', '{"items": [1, 2, 3]}') r, bf_pause(r) \gset

SELECT pg_advisory_lock(4242);
SELECT bf_start('rc_block', '{"items": [1, 2, 3]}') AS running_run \gset
-- Wait until a worker executes its first item (it blocks on the lock).
SELECT set_config('rc.run', :'running_run', false) IS NOT NULL AS noted;
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT active FROM batchflow.dashboard WHERE run = current_setting('rc.run')::bigint) = 1;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

SELECT workflow, status, node, progress, percent, items, skipped, active, failed, errors
  FROM batchflow.dashboard;

SELECT loop_id, status, total, completed FROM bf_progress(:paused_run);
SELECT bf_wait(:paused_run, '1 second');

-- Force cancel interrupts the item waiting in its statement.
SELECT bf_cancel(:running_run, force => true);
SELECT bf_wait(:running_run, '1 minute');
SELECT idx, status, error FROM batchflow.items WHERE run_id = :running_run ORDER BY idx;
SELECT pg_advisory_unlock(4242);
SELECT bf_cancel(:paused_run, true);
SELECT bf_wait(:paused_run, '1 minute');

SELECT workflow, status, progress, percent, items, skipped
  FROM batchflow.dashboard;

-- The catalog, purge and unregister.
SELECT name, owner, version, versions, runs FROM batchflow.workflows ORDER BY name;
SELECT bf_unregister('rc_input');
SELECT bf_purge('1 day');
SELECT bf_purge('0');
SELECT name, runs FROM batchflow.workflows ORDER BY name;
SELECT bf_start('rc_blok');
SELECT bf_unregister('rc_nothing');
RESET ROLE;
SELECT bf_unregister('rc_block');
DROP OWNED BY bf_rc_user;
DROP ROLE bf_rc_user;
