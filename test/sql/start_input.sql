-- bf_start checks its input before it creates anything: the input must be a
-- JSON object (SQL NULL counts as {}), and when the first node is a loop
-- over a variable, that variable must be an array or null.  A missing
-- variable stays an empty loop, with a NOTICE that names it.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- The SQLSTATE and message of whatever a statement raises.
CREATE FUNCTION pg_temp.raised(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'nothing raised';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT bf_register('start_input_greet', $j${"nodes": [
  {"id": "greet_all", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "names"},
   "children": [{"id": "hello", "type": "activity", "activity": "sql",
                 "sql": "SELECT 'hello ' || ($1 #>> '{}')"}]}]}$j$) > 0 AS registered;
SELECT count(*) AS runs_before FROM batchflow.run \gset

-- Not an object: refused, naming the JSON type found.
SELECT bf_start('start_input_greet', '["ada", "grace"]');
SELECT bf_start('start_input_greet', '"ada"');
SELECT bf_start('start_input_greet', '42');
SELECT bf_start('start_input_greet', 'true');
SELECT bf_start('start_input_greet', 'null'::jsonb);

-- The first loop's variable is not an array: refused, naming the type.
SELECT bf_start('start_input_greet', '{"names": "ada"}');
SELECT bf_start('start_input_greet', '{"names": {"first": "ada"}}');
SELECT bf_start('start_input_greet', '{"names": 7}');
SELECT bf_start('start_input_greet', '{"names": false}');

-- All with SQLSTATE 22023 (invalid_parameter_value).
SELECT input, pg_temp.raised(format('SELECT bf_start(%L, %L::jsonb)', 'start_input_greet', input))
  FROM unnest(ARRAY['[]', '[{"names": ["ada"]}]', '""', '0', 'false', 'null',
                    '{"names": "ada"}', '{"names": {}}', '{"names": 0}', '{"names": true}']) AS input;

-- Nothing was created by any of them.
SELECT count(*) - :runs_before AS runs_created FROM batchflow.run;

-- A missing variable: an empty loop, as before, but said with a NOTICE.
SELECT bf_start('start_input_greet', '{"nmaes": ["ada"]}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT bf_start('start_input_greet', NULL) AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT bf_start('start_input_greet') AS run \gset
SELECT bf_wait(:run, '1 minute');

-- null and arrays are accepted without a word.
SELECT bf_start('start_input_greet', '{"names": null}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT bf_start('start_input_greet', '{"names": ["ada", "grace"]}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, output FROM batchflow.items WHERE run_id = :run ORDER BY idx;

-- Only the first node is checked at the door: a later loop's variable may
-- still be set by an earlier activity, and is checked when it is reached.
SELECT bf_register('start_input_later', $j${"nodes": [
  {"id": "first", "type": "activity", "activity": "sql", "sql": "SELECT 1"},
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"variable": "names"},
   "children": [{"id": "hello", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}$j$) > 0 AS registered;
SELECT bf_start('start_input_later', '{"names": "ada"}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;

-- A first node that is not a loop over a variable needs no variable.
SELECT bf_register('start_input_static', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [1, 2]},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}]}$j$) > 0 AS registered;
SELECT bf_start('start_input_static', '{}') AS run \gset
SELECT bf_wait(:run, '1 minute');
-- ... but its input must still be an object.
SELECT bf_start('start_input_static', '[1, 2]');
