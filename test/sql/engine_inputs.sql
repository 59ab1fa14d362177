-- Loop input sources: variable, activity output, static; null and non-array.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

CREATE TABLE eng_inputs_sink (wf text NOT NULL, idx int NOT NULL, item jsonb);

-- {"variable": ...} reads a key of the run's input object.
SELECT bf_register('eng_inputs_variable', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"variable": "names"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_inputs_sink VALUES ('variable', $2, $1)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_inputs_variable', '{"names": ["ann", "bob", "cy"]}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, item FROM eng_inputs_sink WHERE wf = 'variable' ORDER BY idx;

-- {"activity": ...} reads the result of an earlier top-level activity, and
-- {"variable": ...} also reads a value an activity saved with "output".
SELECT bf_register('eng_inputs_activity', $j${"nodes": [
  {"id": "pick", "type": "activity", "activity": "sql",
   "sql": "SELECT jsonb_agg(g * 10 ORDER BY g) FROM generate_series(1, 3) g", "output": "picked"},
  {"id": "by_activity", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"activity": "pick"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_inputs_sink VALUES ('activity', $2, $1)"}]},
  {"id": "by_output", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "picked"},
   "children": [{"id": "put_again", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_inputs_sink VALUES ('output', $2, $1)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_inputs_activity') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT wf, idx, item FROM eng_inputs_sink WHERE wf IN ('activity', 'output') ORDER BY wf, idx;
SELECT loop_id, idx, status, output FROM batchflow.items WHERE run_id = :run AND loop_id = 'pick';
SELECT vars -> 'picked' AS picked FROM batchflow.runs WHERE id = :run;

-- {"static": [...]} is part of the definition.
SELECT bf_register('eng_inputs_static', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"static": [true, "two", {"three": 3}, [4], null]},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_inputs_sink VALUES ('static', $2, $1)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_inputs_static') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, item FROM eng_inputs_sink WHERE wf = 'static' ORDER BY idx;

-- null, or a missing variable, is an empty array: the run succeeds.
SELECT bf_register('eng_inputs_maybe', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "xs"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_inputs_sink VALUES ('maybe', $2, $1)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_inputs_maybe', '{"xs": null}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT node_id, status, total FROM batchflow.loop WHERE run_id = :run;
SELECT bf_start('eng_inputs_maybe', '{}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT count(*) AS rows FROM eng_inputs_sink WHERE wf = 'maybe';

-- Anything else is refused by bf_start when the loop is the first node
-- (test/sql/start_input.sql has the messages) ...
SELECT bf_start('eng_inputs_maybe', '{"xs": {"a": 1}}');
-- ... and fails the run when a later node reaches it, naming the source and
-- the JSON type found.
SELECT bf_register('eng_inputs_later', $j${"nodes": [
  {"id": "first", "type": "activity", "activity": "sql", "sql": "SELECT 1"},
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "xs"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_inputs_sink VALUES ('maybe', $2, $1)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_inputs_later', '{"xs": {"a": 1}}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT bf_start('eng_inputs_later', '{"xs": 42}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT bf_register('eng_inputs_bad_activity', $j${"nodes": [
  {"id": "pick", "type": "activity", "activity": "sql", "sql": "SELECT 'not a list'"},
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"activity": "pick"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_inputs_sink VALUES ('bad', $2, $1)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_inputs_bad_activity') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT count(*) AS rows FROM eng_inputs_sink WHERE wf IN ('maybe', 'bad');

DROP TABLE eng_inputs_sink;
