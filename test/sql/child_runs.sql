-- Workflow activities: an item whose work is a child run.  Registration
-- errors; success with templated input; the parent's cap counts children
-- in flight (measured from the child runs' times); failure; bf_retry of the
-- parent re-runs only the failed child's failed items; cancel propagation;
-- a workflow that would start itself; a top-level workflow activity.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;
\set SHOW_CONTEXT never

-- Registration.
SELECT bf_register('cr_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "workflow"}]}');
SELECT bf_register('cr_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "workflow", "workflow": ""}]}');
SELECT bf_register('cr_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "workflow", "workflow": "w", "input": [1]}]}');
SELECT bf_register('cr_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "workflow", "workflow": "w", "sql": "SELECT 1"}]}');
SELECT bf_register('cr_x', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "children": [
    {"id": "w", "type": "activity", "activity": "workflow", "workflow": "w"},
    {"id": "s", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('cr_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "shell"}]}');

-- The child: a loop over its input's "parts", each inserting a row.
CREATE TABLE cr_t (child bigint NOT NULL, part int NOT NULL, s timestamptz NOT NULL,
                   e timestamptz NOT NULL, PRIMARY KEY (child, part));
CREATE TABLE cr_fail (part int PRIMARY KEY);
-- Fails the parts listed in cr_fail, at execution (never folded by the planner).
CREATE FUNCTION cr_check(p int) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM cr_fail WHERE part = p) THEN
        RAISE EXCEPTION 'part % failed', p;
    END IF;
    RETURN true;
END
$$;
SELECT bf_register('cr_child', '{"nodes": [{"id": "parts", "type": "loop", "loopType": "parallel", "concurrency": 1,
  "inputSource": {"variable": "parts"},
  "children": [{"id": "p", "type": "activity", "activity": "sql",
    "sql": "INSERT INTO cr_t SELECT ($3 ->> ''run'')::bigint, ($1)::int, s, clock_timestamp() FROM (SELECT clock_timestamp() s, pg_sleep(0.05)) x WHERE cr_check(($1)::int) RETURNING 1"}]}]}') > 0 AS registered;
SELECT bf_register('cr_parent', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"variable": "items"}, "errorStrategy": "continue",
  "children": [{"id": "sub", "type": "activity", "activity": "workflow", "workflow": "cr_child",
                "input": {"parts": "{{item.parts}}", "label": "item {{index}} of run {{run}}"}}]}]}') > 0 AS registered;

-- Success: 6 parent items, each a child run of 3 parts; at most 2 children at once.
SELECT bf_start('cr_parent', $j${"items": [{"parts": [1, 2, 3]}, {"parts": [4, 5, 6]}, {"parts": [7, 8, 9]},
  {"parts": [10, 11, 12]}, {"parts": [13, 14, 15]}, {"parts": [16, 17, 18]}]}$j$) AS run \gset
SELECT bf_wait(:run, '2 minutes');
SELECT idx, status, attempts, output ->> 'status' AS child_status,
       (output ->> 'run')::bigint = (SELECT c.id FROM batchflow.runs c WHERE c.parent_run = :run
                                       AND c.input ->> 'label' = format('item %s of run %s', idx, :run)) AS output_names_child
  FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT count(*) AS children, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       min((input -> 'parts')::text) AS first_input
  FROM batchflow.runs WHERE parent_run = :run;
SELECT count(*) AS parts_done FROM cr_t t JOIN batchflow.runs c ON c.id = t.child WHERE c.parent_run = :run;
-- The cap counts children in flight: at most 2 child runs at any instant, and 2 reached.
SELECT max(open) AS max_children_at_once FROM (
  SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS open
    FROM (SELECT started_at AS at, 1 AS delta FROM batchflow.runs WHERE parent_run = :run
          UNION ALL
          SELECT finished_at, -1 FROM batchflow.runs WHERE parent_run = :run) ev) x;
-- The dashboard lists the children right under their parent, indented.
SELECT workflow, parent_run = :run AS child_of_run
  FROM batchflow.dashboard WHERE run = :run OR parent_run = :run;
-- Each parent item started before its child and ended after it.
SELECT bool_and(i.started_at <= c.started_at AND i.finished_at >= c.finished_at) AS item_spans_child
  FROM batchflow.items i JOIN batchflow.runs c ON c.id = (i.output ->> 'run')::bigint
 WHERE i.run_id = :run;

-- Failure, then bf_retry of the parent: only the failed child runs again,
-- and in it only its failed part and the part fail-fast skipped.
INSERT INTO cr_fail VALUES (5);
SELECT bf_start('cr_parent', $j${"items": [{"parts": [1, 2, 3]}, {"parts": [4, 5, 6]}]}$j$) AS run \gset
SELECT bf_wait(:run, '2 minutes');
SELECT idx, status, output ->> 'status' AS child_status,
       regexp_replace(error, 'run \d+', 'run N') AS error
  FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT (output ->> 'run')::bigint AS failed_child FROM batchflow.items WHERE run_id = :run AND idx = 1 \gset
SELECT count(*) AS children FROM batchflow.runs WHERE parent_run = :run;
DELETE FROM cr_fail;
SELECT bf_retry(:run) AS requeued;
SELECT bf_wait(:run, '2 minutes');
SELECT idx, status, attempts, output ->> 'status' AS child_status,
       (output ->> 'run')::bigint = :failed_child AS same_child_for_idx_1
  FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT count(*) AS children FROM batchflow.runs WHERE parent_run = :run;
SELECT idx, status, attempts FROM batchflow.items WHERE run_id = :failed_child ORDER BY idx;
-- Part 4 ran once (cr_t's key would refuse a second row): 3 rows.
SELECT count(*) AS rows_of_failed_child FROM cr_t WHERE child = :failed_child;

-- fail-fast: the parent fails with the child's error.
SELECT bf_register('cr_ff', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 1,
  "inputSource": {"variable": "items"},
  "children": [{"id": "sub", "type": "activity", "activity": "workflow", "workflow": "cr_child"}]}]}') > 0 AS registered;
INSERT INTO cr_fail VALUES (21);
SELECT bf_start('cr_ff', '{"items": [{"parts": [21]}, {"parts": [22]}]}') AS run \gset
SELECT bf_wait(:run, '2 minutes');
SELECT status, regexp_replace(error, 'run \d+', 'run N', 'g') AS error FROM batchflow.runs WHERE id = :run;
SELECT idx, status FROM batchflow.items WHERE run_id = :run ORDER BY idx;
DELETE FROM cr_fail;

-- Cancelling the parent cancels its children (and theirs).
SELECT bf_register('cr_slow', '{"nodes": [{"id": "naps", "type": "loop", "loopType": "parallel", "concurrency": 1,
  "inputSource": {"static": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
  "children": [{"id": "nap", "type": "activity", "activity": "sql", "sql": "SELECT pg_sleep(0.5)"}]}]}') > 0 AS registered;
SELECT bf_register('cr_mid', '{"nodes": [{"id": "sub", "type": "activity", "activity": "workflow", "workflow": "cr_slow"}]}') > 0 AS registered;
SELECT bf_register('cr_top', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
  "inputSource": {"static": [1, 2, 3, 4]},
  "children": [{"id": "sub", "type": "activity", "activity": "workflow", "workflow": "cr_mid"}]}]}') > 0 AS registered;
SELECT bf_start('cr_top') AS run \gset
CREATE FUNCTION cr_grandchildren(p_run bigint, p_want int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    FOR i IN 1 .. 600 LOOP
        SELECT count(*) INTO n FROM batchflow.run g JOIN batchflow.run m ON m.id = g.parent_run
         WHERE m.parent_run = p_run AND g.status = 'running';
        EXIT WHEN n >= p_want;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN n;
END
$$;
SELECT cr_grandchildren(:run, 3) AS grandchildren_running;
SELECT bf_cancel(:run);
SELECT bf_wait(:run, '1 minute');
SELECT count(*) AS children, count(*) FILTER (WHERE status = 'cancelled') AS cancelled
  FROM batchflow.runs WHERE parent_run = :run;
SELECT count(*) AS grandchildren, count(*) FILTER (WHERE status = 'cancelled') AS cancelled
  FROM batchflow.runs g WHERE g.parent_run IN (SELECT id FROM batchflow.runs WHERE parent_run = :run);
SELECT status, count(*) FROM batchflow.items WHERE run_id = :run GROUP BY status ORDER BY status;

-- Force cancel reaches the items of children and grandchildren.  Each
-- grandchild's one item waits for advisory lock 4343, which this session
-- holds; 3 of the top run's 4 items are in flight (cap 3), and bf_progress
-- counts those 3 children as active.  bf_cancel(run, force => true)
-- interrupts the grandchildren's items while the lock is still held: their
-- effects roll back and they end skipped with error "cancelled", and every
-- run ends cancelled.
CREATE TABLE cr_force (run bigint NOT NULL);
SELECT bf_register('cr_block', '{"nodes": [{"id": "one", "type": "loop", "loopType": "parallel", "concurrency": 1,
  "inputSource": {"static": [1]},
  "children": [{"id": "wait", "type": "activity", "activity": "sql",
    "sql": "INSERT INTO cr_force SELECT ($3 ->> ''run'')::bigint FROM pg_advisory_xact_lock_shared(4343) RETURNING 1"}]}]}') > 0 AS registered;
SELECT bf_register('cr_fmid', '{"nodes": [{"id": "sub", "type": "activity", "activity": "workflow", "workflow": "cr_block"}]}') > 0 AS registered;
SELECT bf_register('cr_ftop', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
  "inputSource": {"static": [1, 2, 3, 4]},
  "children": [{"id": "sub", "type": "activity", "activity": "workflow", "workflow": "cr_fmid"}]}]}') > 0 AS registered;
SELECT pg_advisory_lock(4343);
SELECT bf_start('cr_ftop') AS run \gset
CREATE FUNCTION cr_blocked_items(p_run bigint, p_want int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    FOR i IN 1 .. 600 LOOP
        SELECT count(*) INTO n FROM batchflow.active_items() a
          JOIN batchflow.run g ON g.id = a.run_id
          JOIN batchflow.run m ON m.id = g.parent_run
         WHERE m.parent_run = p_run;
        EXIT WHEN n >= p_want;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN n;
END
$$;
SELECT cr_blocked_items(:run, 3) AS grandchild_items_executing;
SELECT loop_id, status, total, completed, active FROM bf_progress(:run);
SELECT run = :run AS top, active FROM batchflow.dashboard WHERE run = :run;
SELECT bf_cancel(:run, force => true);
SELECT bf_wait(:run, '30 seconds');
SELECT count(*) AS runs, count(*) FILTER (WHERE r.status = 'cancelled') AS cancelled
  FROM batchflow.runs r
 WHERE r.parent_run = :run OR r.parent_run IN (SELECT c.id FROM batchflow.runs c WHERE c.parent_run = :run);
SELECT i.status, i.error, count(*)
  FROM batchflow.items i
  JOIN batchflow.runs g ON g.id = i.run_id
  JOIN batchflow.runs m ON m.id = g.parent_run
 WHERE m.parent_run = :run
 GROUP BY 1, 2;
SELECT count(*) AS effects_left FROM cr_force;
SELECT pg_advisory_unlock(4343);

-- A workflow may not start itself, directly or through others.
SELECT bf_register('cr_self', '{"nodes": [{"id": "again", "type": "activity", "activity": "workflow", "workflow": "cr_self"}]}') > 0 AS registered;
SELECT bf_start('cr_self') AS run \gset
SELECT bf_wait(:run);
SELECT status, regexp_replace(error, 'run \d+', 'run N', 'g') AS error FROM batchflow.runs WHERE id = :run;
SELECT bf_register('cr_ping', '{"nodes": [{"id": "p", "type": "activity", "activity": "workflow", "workflow": "cr_pong"}]}') > 0 AS registered;
SELECT bf_register('cr_pong', '{"nodes": [{"id": "p", "type": "activity", "activity": "workflow", "workflow": "cr_ping"}]}') > 0 AS registered;
SELECT bf_start('cr_ping') AS run \gset
SELECT bf_wait(:run);
SELECT status, regexp_replace(error, 'run \d+', 'run N', 'g') AS error FROM batchflow.runs WHERE id = :run;
SELECT count(*) AS runs_in_chain FROM batchflow.runs WHERE id = :run OR parent_run = :run;

-- A top-level workflow activity with "output"; its result feeds the next node.
SELECT bf_register('cr_top_level', '{"nodes": [
  {"id": "sub", "type": "activity", "activity": "workflow", "workflow": "cr_child",
   "input": {"parts": [31, 32]}, "output": "child"},
  {"id": "after", "type": "activity", "activity": "sql", "sql": "SELECT $3 -> ''vars'' -> ''child'' ->> ''status''"}]}') > 0 AS registered;
SELECT bf_start('cr_top_level') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT outputs ->> 'after' AS after_saw, outputs -> 'sub' ->> 'status' AS sub_status
  FROM batchflow.run WHERE id = :run;
