-- pg_dump carries the rows of an extension's tables only when they are
-- marked with pg_extension_config_dump: every table and sequence of
-- batchflow must be (sql/parts/70_backup.sql).  A new table or sequence
-- that is not marked is listed here; mark it in its part and in the
-- upgrade script.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- Tables and sequences of the extension that pg_dump would leave out.
SELECT c.oid::regclass AS not_marked, c.relkind
  FROM pg_depend d
  JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
  JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND e.extname = 'batchflow' AND c.relkind IN ('r', 'p', 'S')
   AND c.oid <> ALL (coalesce(e.extconfig, '{}'))
 ORDER BY 1;

-- Those marked, with their filters: none, since the install creates no row.
SELECT u.rel::regclass AS marked, c.relkind, u.cond AS filter
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(rel, cond)
  JOIN pg_class c ON c.oid = u.rel
 WHERE e.extname = 'batchflow'
 ORDER BY u.rel::regclass::text;

-- A restore loads loops and their progress rows with COPY (or INSERT, for
-- a dump taken with --inserts): the loop trigger leaves the progress row
-- to the restore, and a restored 'live' progress row is recounted from the
-- items (its batched counters may lag behind them).
BEGIN;
SELECT bf_register('backup_wf', '{"nodes": [
  {"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}') > 0 AS registered;
INSERT INTO batchflow.run (id, version_id, owner, status)
SELECT -1, max(id), 10, 'running' FROM batchflow.workflow_version WHERE workflow = 'backup_wf';
COPY batchflow.loop (id, run_id, node_index, node_id, kind, node, sequential, concurrency, total) FROM stdin;
-1	-1	0	one	activity	{}	t	1	1
\.
SELECT count(*) AS progress_rows_made_by_the_trigger FROM batchflow.loop_progress WHERE loop_ref = -1;
COPY batchflow.loop_progress (loop_ref, run_id, state, completed) FROM stdin;
-1	-1	live	7
\.
SELECT state, completed FROM batchflow.loop_progress WHERE loop_ref = -1;
INSERT INTO batchflow.loop (id, run_id, node_index, node_id, kind, node, sequential, concurrency, total)
VALUES (-2, -1, 1, 'two', 'activity', '{}', true, 1, 1);
SELECT count(*) AS progress_rows_made_by_the_trigger FROM batchflow.loop_progress WHERE loop_ref = -2;
INSERT INTO batchflow.loop_progress (loop_ref, run_id, state, completed) VALUES (-2, -1, 'final', 1);
SELECT loop_ref, state, completed FROM batchflow.loop_progress WHERE loop_ref = -2;
ROLLBACK;

-- The engine's own loops still get their progress row, 'live' while open.
SELECT bf_register('backup_wf', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential", "inputSource": {"static": [1, 2]},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT pg_sleep(0.2)"}]}]}') > 0 AS registered;
BEGIN;
SELECT bf_start('backup_wf') AS run \gset
SELECT p.state FROM batchflow.loop_progress p WHERE p.run_id = :run;
COMMIT;
SELECT bf_wait(:run, '1 minute');
SELECT p.state, p.completed FROM batchflow.loop_progress p WHERE p.run_id = :run;
