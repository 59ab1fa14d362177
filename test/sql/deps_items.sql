-- dependsOn: items wait for the items they depend on.  Registration and
-- loop-start errors with their exact texts; the order, checked from the
-- recorded start and end times; the cap, measured, with dependencies;
-- transitive skips; bf_retry.  Needs batchflow.max_workers >= 4.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;
\set SHOW_CONTEXT never

-- Registration: the property's shape.
CREATE FUNCTION deps_def(deps jsonb, loop_type text DEFAULT 'parallel') RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object(
    'id', 'build', 'type', 'loop', 'loopType', loop_type,
    'inputSource', jsonb_build_object('variable', 'items'), 'dependsOn', deps,
    'children', jsonb_build_array(jsonb_build_object(
      'id', 'b', 'type', 'activity', 'activity', 'sql', 'sql', 'SELECT $1')))
    || CASE WHEN loop_type = 'parallel' THEN '{"concurrency": 2}'::jsonb ELSE '{}' END))
$$;
SELECT bf_register('deps_x', deps_def('"name"'));
SELECT bf_register('deps_x', deps_def('{"key": "name"}'));
SELECT bf_register('deps_x', deps_def('{"key": "name", "after": 3}'));
SELECT bf_register('deps_x', deps_def('{"key": "", "after": "deps"}'));
SELECT bf_register('deps_x', deps_def('{"key": "name", "after": "deps", "order": 1}'));
SELECT bf_register('deps_x', deps_def('{"key": "name", "after": "deps"}', 'sequential'));
SELECT bf_register('deps_x', deps_def('{"key": "name", "after": "deps"}')) > 0 AS registered;

-- Loop start: a bad graph is an error of bf_start (22023), and nothing is created.
SELECT count(*) AS runs_before FROM batchflow.run \gset
\set VERBOSITY default
SELECT bf_start('deps_x', '{"items": [{"name": "a", "deps": ["c"]}, {"name": "b", "deps": ["a"]}, {"name": "c", "deps": ["b"]}, {"name": "d"}]}');
SELECT bf_start('deps_x', '{"items": [{"name": "a", "deps": ["a"]}]}');
SELECT bf_start('deps_x', '{"items": [{"name": "a"}, {"name": "b", "deps": ["a", "zz"]}]}');
SELECT bf_start('deps_x', '{"items": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}');
SELECT bf_start('deps_x', '{"items": [{"name": "a"}, 7]}');
SELECT bf_start('deps_x', '{"items": [{"name": "a"}, {"key": "b"}]}');
SELECT bf_start('deps_x', '{"items": [{"name": "a", "deps": "b"}, {"name": "b"}]}');
\set VERBOSITY terse
SELECT bf_start('deps_x', '{"items": [{"name": "a", "deps": ["b"]}, {"name": "b", "deps": ["a"]}]}');
\set VERBOSITY default
SELECT count(*) = :runs_before AS nothing_created FROM batchflow.run;
-- Keys may be numbers; repeated dependencies count once; null deps is none.
SELECT bf_start('deps_x', '{"items": [{"name": 1}, {"name": 2, "deps": [1, "1"]}, {"name": 3, "deps": null}]}') AS run \gset
SELECT bf_wait(:run);
-- item.unmet is each item's number of dependencies; once all succeeded no
-- item is left ready and every count of the loop (item 1 has one
-- dependency, so none) is down to 0.
SELECT idx, unmet, status FROM batchflow.item WHERE run_id = :run ORDER BY idx;
SELECT (SELECT count(*) FROM batchflow.item_ready WHERE run_id = :run) AS ready_left,
       (SELECT count(*) FROM batchflow.item_wait WHERE run_id = :run) AS counts;
SELECT dep_idx, idx FROM batchflow.item_dep WHERE run_id = :run;

-- A later node's bad graph fails the run.
SELECT bf_register('deps_later', '{"nodes": [
  {"id": "pick", "type": "activity", "activity": "sql", "output": "items",
   "sql": "SELECT ''[{\"name\": \"a\", \"deps\": [\"b\"]}, {\"name\": \"b\", \"deps\": [\"a\"]}]''::jsonb"},
  {"id": "build", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "items"}, "dependsOn": {"key": "name", "after": "deps"},
   "children": [{"id": "b", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}]}') > 0 AS registered;
SELECT bf_start('deps_later') AS run \gset
SELECT bf_wait(:run);
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT node_id FROM batchflow.loop WHERE run_id = :run ORDER BY node_index;

-- Order and cap: every item records when its SQL started and ended.
CREATE TABLE deps_t (tag text NOT NULL, key text NOT NULL, s timestamptz NOT NULL,
                     e timestamptz NOT NULL, PRIMARY KEY (tag, key));
CREATE FUNCTION deps_overlap_max(p_tag text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT max(open) FROM (
    SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS open
      FROM (SELECT s AS at, 1 AS delta FROM deps_t WHERE tag = p_tag
            UNION ALL
            SELECT e, -1 FROM deps_t WHERE tag = p_tag) ev) x
$$;
-- No item started before all its dependencies ended succeeded.
CREATE FUNCTION deps_order_violations(p_run bigint) RETURNS bigint
LANGUAGE sql AS $$
  SELECT count(*)
    FROM batchflow.item i
    JOIN batchflow.item_dep d ON d.loop_ref = i.loop_ref AND d.idx = i.idx
    JOIN batchflow.item x ON x.loop_ref = d.loop_ref AND x.idx = d.dep_idx
    LEFT JOIN deps_t ti ON ti.tag = i.run_id::text AND ti.key = i.item ->> 'name'
    LEFT JOIN deps_t tx ON tx.tag = x.run_id::text AND tx.key = x.item ->> 'name'
   WHERE i.run_id = p_run AND i.status = 'succeeded'
     AND (x.status <> 'succeeded' OR x.finished_at > i.started_at OR tx.e > ti.s)
$$;
-- Fails an item that has "fail" (at execution: a volatile function, never folded by the planner).
CREATE FUNCTION deps_check(item jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF item ? 'fail' THEN
        RAISE EXCEPTION 'build of % failed', item ->> 'name';
    END IF;
    RETURN true;
END
$$;
SELECT bf_register('deps_cap', '{"nodes": [
  {"id": "build", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "items"}, "dependsOn": {"key": "name", "after": "deps"},
   "errorStrategy": "continue",
   "children": [{"id": "b", "type": "activity", "activity": "sql",
     "sql": "INSERT INTO deps_t SELECT $3 ->> ''run'', $1 ->> ''name'', s, clock_timestamp() FROM (SELECT clock_timestamp() s, pg_sleep(($1 ->> ''ms'')::int / 1000.0)) x WHERE deps_check($1) RETURNING 1"}]}]}') > 0 AS registered;

-- A diamond, a chain and leaves: 16 items of 100 ms (the diamond's top 300 ms), cap 3.
SELECT bf_start('deps_cap', $j${"items": [
  {"name": "top", "deps": ["left", "right"], "ms": 100},
  {"name": "left", "deps": ["base"], "ms": 100},
  {"name": "right", "deps": ["base"], "ms": 100},
  {"name": "base", "ms": 300},
  {"name": "c4", "deps": ["c3"], "ms": 100},
  {"name": "c3", "deps": ["c2"], "ms": 100},
  {"name": "c2", "deps": ["c1"], "ms": 100},
  {"name": "c1", "ms": 100},
  {"name": "l1", "ms": 100}, {"name": "l2", "ms": 100}, {"name": "l3", "ms": 100},
  {"name": "l4", "ms": 100}, {"name": "l5", "ms": 100}, {"name": "l6", "ms": 100},
  {"name": "l7", "ms": 100}, {"name": "after_all", "deps": ["top", "c4", "l7"], "ms": 100}]}$j$) AS run \gset
SELECT bf_wait(:run, '2 minutes');
SELECT count(*) AS items, deps_overlap_max(:'run') AS max_overlap FROM deps_t WHERE tag = :'run';
SELECT deps_order_violations(:run) AS order_violations;
SELECT status, count(*) FROM batchflow.items WHERE run_id = :run GROUP BY status;
-- Counted down exactly once: the items with several dependencies (top,
-- after_all) have counts, each down to 0; nothing is left ready.
SELECT i.item ->> 'name' AS name, i.unmet AS dependencies, w.unmet AS still_unmet
  FROM batchflow.item_wait w JOIN batchflow.item i ON i.loop_ref = w.loop_ref AND i.idx = w.idx
 WHERE w.run_id = :run ORDER BY i.idx;
SELECT count(*) AS ready_left FROM batchflow.item_ready WHERE run_id = :run;

-- bf_progress: items waiting for a dependency are counted as "blocked".
SELECT bf_start('deps_cap', $j${"items": [{"name": "root", "ms": 1500},
  {"name": "a", "deps": ["root"], "ms": 10}, {"name": "b", "deps": ["a"], "ms": 10},
  {"name": "free", "ms": 10}]}$j$) AS run \gset
CREATE FUNCTION deps_wait_for(p_tag text, p_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 500 LOOP
        IF EXISTS (SELECT 1 FROM deps_t WHERE tag = p_tag AND key = p_key) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN false;
END
$$;
SELECT deps_wait_for(:'run', 'free') AS free_done;
SELECT loop_id, total, blocked FROM bf_progress(:run);
SELECT bf_wait(:run);
SELECT loop_id, total, completed, blocked FROM bf_progress(:run);

-- Transitive skip: "bad" fails; what depends on it, directly or not, is
-- skipped with an error naming it; the rest runs.
SELECT bf_start('deps_cap', $j${"items": [
  {"name": "ok1", "ms": 10},
  {"name": "bad", "deps": ["ok1"], "ms": 10, "fail": true},
  {"name": "child", "deps": ["bad"], "ms": 10},
  {"name": "grandchild", "deps": ["child", "ok1"], "ms": 10},
  {"name": "other", "deps": ["ok1"], "ms": 10},
  {"name": "late", "deps": ["other", "grandchild"], "ms": 10}]}$j$) AS run \gset
SELECT bf_wait(:run);
SELECT idx, item ->> 'name' AS name, status, attempts, error
  FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT deps_order_violations(:run) AS order_violations;

-- bf_retry: the failed item and its skipped dependents run again, in order.
UPDATE batchflow.item SET item = item - 'fail' WHERE run_id = :run AND item ->> 'name' = 'bad';
SELECT bf_retry(:run) AS requeued;
SELECT bf_wait(:run);
SELECT idx, item ->> 'name' AS name, status, error
  FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT deps_order_violations(:run) AS order_violations;

-- fail-fast: the first failure skips everything not yet started.
SELECT bf_register('deps_ff', '{"nodes": [
  {"id": "build", "type": "loop", "loopType": "parallel", "concurrency": 1,
   "inputSource": {"variable": "items"}, "dependsOn": {"key": "name", "after": "deps"},
   "children": [{"id": "b", "type": "activity", "activity": "sql",
     "sql": "SELECT deps_check($1)"}]}]}') > 0 AS registered;
SELECT bf_start('deps_ff', '{"items": [{"name": "b", "deps": ["a"]}, {"name": "a", "fail": 1}, {"name": "c"}]}') AS run \gset
SELECT bf_wait(:run);
SELECT idx, status, error FROM batchflow.items WHERE run_id = :run ORDER BY idx;
