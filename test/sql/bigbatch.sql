-- Big batches: query and keyRanges input sources, large arrays materialised
-- by the workers, and the throttles: every validation error with its exact
-- text, and small runs end to end.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;
\set SHOW_CONTEXT never
\set VERBOSITY default

-- Validation: query
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": 42}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": ""}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": "SELEC id FROM t"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": "SELECT 1; SELECT 2"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": "DELETE FROM t RETURNING id"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": "SELECT 1 INTO t2"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": "SELECT 1", "static": [1]}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');

-- Validation: keyRanges
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": "t"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "t", "key": "id"}}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "t", "key": 7, "size": 10}}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "t", "key": "id", "size": 0}}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "t", "key": "id", "size": 1000001}}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "t", "key": "id", "size": 2.5}}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "t", "key": "id", "size": 10, "step": 1}}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');

-- Validation: throttles
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "maxItemsPerSecond": 0, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "maxItemsPerSecond": "5", "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "maxItemsPerSecond": 2000000, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "maxReplicationLag": 10, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "maxReplicationLag": "soon", "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "maxReplicationLag": "-5s", "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('bb_bad', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": "SELECT 1"}, "dependsOn": {"key": "k", "after": "d"},
  "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
-- Valid throttles
SELECT bf_register('bb_ok', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"static": [1]}, "maxItemsPerSecond": 0.5, "maxReplicationLag": "500ms",
  "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}') > 0 AS registered;
\set VERBOSITY default

-- A query source: one column -> its value; several -> an object; $1 = vars.
CREATE TABLE bb_src (id int PRIMARY KEY, name text);
INSERT INTO bb_src SELECT g, 'n' || g FROM generate_series(1, 25) g;
CREATE TABLE bb_sink (item jsonb, idx int);
SELECT bf_register('bb_query', $j${"nodes": [
  {"id": "one", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"query": "SELECT id FROM bb_src WHERE id <= ($1 ->> 'upto')::int ORDER BY id;"},
   "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "INSERT INTO bb_sink VALUES ($1, $2)"}]},
  {"id": "two", "type": "loop", "loopType": "sequential",
   "inputSource": {"query": "SELECT id, name FROM bb_src WHERE id > 23 ORDER BY id -- a comment"},
   "children": [{"id": "c2", "type": "activity", "activity": "sql", "sql": "INSERT INTO bb_sink VALUES ($1, $2)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('bb_query', '{"upto": 5}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT item, idx FROM bb_sink ORDER BY item::text;
SELECT loop_id, status, total, completed FROM bf_progress(:run);
SELECT count(*) AS fill_rows_left FROM batchflow.loop_fill WHERE run_id = :run;

-- A query that fails when it runs fails the run with its error.
SELECT bf_register('bb_query_err', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"query": "SELECT 1 / 0"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}') > 0 AS registered;
SELECT bf_start('bb_query_err') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;

-- keyRanges: contiguous ranges over the key's index, to null on the last.
CREATE TABLE bb_keys (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0);
INSERT INTO bb_keys SELECT g * 3 FROM generate_series(1, 100) g;
SELECT bf_register('bb_ranges', $j${"nodes": [{"id": "r", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "public.bb_keys", "key": "id", "size": 30}},
  "children": [{"id": "c", "type": "activity", "activity": "sql",
    "sql": "UPDATE bb_keys SET v = v + 1 WHERE id >= ($1 ->> 'from')::bigint AND ($1 -> 'to' = 'null' OR id < ($1 ->> 'to')::bigint)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('bb_ranges') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, item FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT v, count(*) FROM bb_keys GROUP BY v;

-- keyRanges without an index on the key: an error when the loop starts.
CREATE TABLE bb_noindex (k int);
SELECT bf_register('bb_noindex', $j${"nodes": [{"id": "r", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "bb_noindex", "key": "k", "size": 10}},
  "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}$j$) > 0 AS registered;
\set VERBOSITY default
SELECT bf_start('bb_noindex');
\set VERBOSITY default
SELECT bf_register('bb_nocol', $j${"nodes": [{"id": "r", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "bb_keys", "key": "nope", "size": 10}},
  "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}$j$) > 0 AS registered;
SELECT bf_start('bb_nocol');
SELECT bf_register('bb_notable', $j${"nodes": [{"id": "r", "type": "loop", "loopType": "parallel", "concurrency": 2,
  "inputSource": {"keyRanges": {"table": "nosuch.table", "key": "id", "size": 10}},
  "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}$j$) > 0 AS registered;
SELECT bf_start('bb_notable');

-- A large array (10,000 elements and more) is materialised behind bf_start.
TRUNCATE bb_sink;
SELECT bf_register('bb_array', '{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 4,
  "inputSource": {"variable": "xs"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "INSERT INTO bb_sink VALUES ($1, $2)"}]}]}') > 0 AS registered;
SELECT bf_start('bb_array', jsonb_build_object('xs', (SELECT jsonb_agg(g) FROM generate_series(0, 14999) g))) AS run \gset
SELECT total FROM batchflow.loop WHERE run_id = :run;
SELECT bf_wait(:run, '2 minutes');
SELECT count(*), count(DISTINCT idx), bool_and(item = to_jsonb(idx)) FROM bb_sink;
