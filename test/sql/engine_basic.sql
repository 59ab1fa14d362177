-- Engine basics: loops of zero, one and many items, run by the workers.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

CREATE TABLE eng_basic_sink (wf text NOT NULL, idx int NOT NULL, item jsonb,
                             run bigint, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                             UNIQUE (wf, idx));
-- The exactly-once oracle: pg_temp.bf_exactly_once(run, node, effects).
\ir test/lib/exactly_once.sql

-- An empty array: the loop completes at once, nothing is executed.
SELECT bf_register('eng_basic_empty', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"static": []},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_basic_sink VALUES ('empty', $2, $1)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_basic_empty') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error, finished_at >= started_at AS finished FROM batchflow.runs WHERE id = :run;
SELECT node_id, status, total FROM batchflow.loop WHERE run_id = :run;
SELECT count(*) AS items FROM batchflow.items WHERE run_id = :run;
SELECT count(*) AS rows FROM eng_basic_sink WHERE wf = 'empty';

-- One item.
SELECT bf_register('eng_basic_one', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "things"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_basic_sink VALUES ('one', $2, $1) RETURNING item"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_basic_one', '{"things": [{"name": "solo"}]}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT loop_id, idx, item, status, attempts, output, error, duration >= '0'::interval AS timed
  FROM batchflow.items WHERE run_id = :run;
SELECT idx, item FROM eng_basic_sink WHERE wf = 'one';

-- 150 items at concurrency 4: every one executed exactly once.
SELECT bf_register('eng_basic_many', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "things"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_basic_sink (wf, idx, item, run) VALUES ('many', $2, $1, ($3->>'run')::bigint) RETURNING ($1)::int * 2"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_basic_many',
                jsonb_build_object('things', (SELECT jsonb_agg(g) FROM generate_series(1, 150) g))) AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT status, count(*), min(attempts), max(attempts), bool_and(output = to_jsonb((item)::int * 2)) AS outputs_ok
  FROM batchflow.items WHERE run_id = :run GROUP BY status;
SELECT count(*), count(DISTINCT idx), min(idx), max(idx), bool_and((item)::int = idx + 1) AS in_place
  FROM eng_basic_sink WHERE wf = 'many';
SELECT node_id, status, total, finished_at IS NOT NULL AS closed FROM batchflow.loop WHERE run_id = :run;
-- Each item's row was written in the transaction that recorded the item's
-- completion: counting rows alone would not catch effects committed apart
-- from completion.
SELECT * FROM pg_temp.bf_exactly_once(:run, 'each', 'eng_basic_sink');

DROP TABLE eng_basic_sink;
