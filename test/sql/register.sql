-- bf_register: versions, ownership, and every validation rule of the
-- definition format, each with its exact error text.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;
\set SHOW_CONTEXT never

-- A valid definition using every property.
SELECT bf_register('reg_full', $j${"description": "every property", "nodes": [
  {"id": "pick", "type": "activity", "activity": "sql", "description": "pick",
   "sql": "SELECT jsonb_agg(g) FROM generate_series(1, 3) g", "output": "nums", "timeoutMs": 5000},
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 10,
   "description": "fan out", "inputSource": {"activity": "pick"},
   "errorStrategy": "retry", "maxRetries": 5, "retryDelayMs": 10,
   "children": [
     {"id": "put", "type": "activity", "activity": "sql", "sql": "SELECT $1"},
     {"id": "call", "type": "activity", "activity": "http", "method": "POST",
      "url": "http://127.0.0.1:1/x?i={{item}}", "headers": {"X-Run": "{{run}}"},
      "body": {"item": "{{item}}"}, "timeoutMs": 100}]},
  {"id": "seq", "type": "loop", "loopType": "sequential", "concurrency": 1,
   "inputSource": {"variable": "nums"}, "errorStrategy": "continue",
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]},
  {"id": "fixed", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": []}, "errorStrategy": "fail-fast",
   "children": [{"id": "two", "type": "activity", "activity": "sql", "sql": "SELECT 2"}]}]}$j$) > 0 AS registered;

-- Registering the same name again adds a version; the old one is kept.
SELECT bf_register('reg_full', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}') > 0 AS registered;
SELECT workflow, version, definition -> 'nodes' -> 0 ->> 'id' AS first_node
  FROM batchflow.workflow_version WHERE workflow = 'reg_full' ORDER BY version;
SELECT name, owner::regrole FROM batchflow.workflow WHERE name = 'reg_full';

-- Names and nulls.
SELECT bf_register(NULL, '{}');
SELECT bf_register('reg_x', NULL);
SELECT bf_register('1bad name', '{"nodes": []}');

-- Top level.
SELECT bf_register('reg_x', '[1, 2]');
SELECT bf_register('reg_x', '"nodes"');
SELECT bf_register('reg_x', '{}');
SELECT bf_register('reg_x', '{"nodes": []}');
SELECT bf_register('reg_x', '{"nodes": {}}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}], "node": 1}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}], "description": 7}');

-- Nodes: shape, ids, types.
SELECT bf_register('reg_x', '{"nodes": [42]}');
SELECT bf_register('reg_x', '{"nodes": [{"type": "activity", "activity": "sql", "sql": "SELECT 1"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "has space", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}, {"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 2"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "loop", "loopType": "sequential", "inputSource": {"static": []}, "children": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "task"}]}');

-- Activities.
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "shell"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": ""}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELEC 1"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1; SELECT 2"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "-- nothing"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1", "url": "http://x"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1", "timeoutMs": 0}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1", "output": "bad name"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http", "url": "ftp://127.0.0.1/x"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http", "url": "{{item}}"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http", "url": "http://127.0.0.1/", "method": "FETCH"}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http", "url": "http://127.0.0.1/", "headers": ["X-A: 1"]}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http", "url": "http://127.0.0.1/", "headers": {"X-A": 1}}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http", "url": "http://127.0.0.1/", "headers": {"X A": "1"}}]}');
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "http", "url": "http://127.0.0.1/", "sql": "SELECT 1"}]}');

-- Loops: loopType and concurrency.
\set loopend '"inputSource": {"static": [1]}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}'
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "random", ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 0, ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 11, ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": -1, ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": "4", ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 2.5, ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 1e30, ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "concurrency": 4, ' || :'loopend')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 4, "concurency": 4, ' || :'loopend')::jsonb);
-- The cap follows batchflow.max_concurrency.
SET batchflow.max_concurrency = 20;
SELECT bf_register('reg_cap20', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 11, ' || :'loopend')::jsonb) > 0 AS registered;
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "parallel", "concurrency": 21, ' || :'loopend')::jsonb);
RESET batchflow.max_concurrency;

-- Loops: input sources.
\set kids '"children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}'
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {}, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"static": [1], "variable": "v"}, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": "users", ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"table": "users"}, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"static": {"a": 1}}, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"variable": 3}, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"activity": "x"}, ' || :'kids' || ']}')::jsonb);
-- An activity named as a source must come before the loop...
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"activity": "later"}, ' || :'kids' || ', {"id": "later", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}')::jsonb);
-- ... be top-level, not a loop's child ...
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l1", "type": "loop", "loopType": "sequential", "inputSource": {"static": []}, ' || :'kids' || ', {"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"activity": "c"}, "children": [{"id": "d", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}')::jsonb);
-- ... and not a loop.
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l1", "type": "loop", "loopType": "sequential", "inputSource": {"static": []}, ' || :'kids' || ', {"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"activity": "l1"}, "children": [{"id": "d", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}')::jsonb);

-- Loops: error strategies.
\set src '"inputSource": {"static": [1]}, '
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"errorStrategy": "ignore", ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"maxRetries": 2, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"errorStrategy": "continue", "retryDelayMs": 2, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"errorStrategy": "retry", "maxRetries": -1, ' || :'kids' || ']}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"errorStrategy": "retry", "retryDelayMs": 1.5, ' || :'kids' || ']}')::jsonb);

-- Loops: children.
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"children": []}]}')::jsonb);
SELECT bf_register('reg_x', '{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"static": [1]}}]}');
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"children": {"id": "c"}}]}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"children": ["SELECT 1"]}]}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "outer", "type": "loop", "loopType": "sequential", ' || :'src' || '"children": [{"id": "inner", "type": "loop", "loopType": "sequential", ' || :'src' || :'kids' || ']}]}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1", "output": "v"}]}]}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"children": [{"id": "c", "type": "activity", "activity": "http"}]}]}')::jsonb);
SELECT bf_register('reg_x', ('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", ' || :'src' || '"output": "v", ' || :'kids' || ']}')::jsonb);

-- Size limit.
SET batchflow.max_definition_size = '1kB';
SELECT bf_register('reg_x', jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object(
  'id', 'a', 'type', 'activity', 'activity', 'sql', 'sql', 'SELECT ''' || repeat('x', 2000) || ''''))));
RESET batchflow.max_definition_size;

-- Nothing was stored by the failed calls.
SELECT count(*) AS stray FROM batchflow.workflow WHERE name = 'reg_x';

-- Ownership: another role cannot add versions to reg_full, but can
-- register its own name.
CREATE ROLE reg_alice;
GRANT USAGE ON SCHEMA batchflow TO reg_alice;
SET ROLE reg_alice;
SELECT bf_register('reg_full', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}');
SELECT bf_register('reg_alice_wf', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}') > 0 AS registered;
RESET ROLE;
SELECT name, owner::regrole FROM batchflow.workflow WHERE name LIKE 'reg_alice%';
-- Versions are numbered per workflow.
SELECT workflow, max(version) FROM batchflow.workflow_version
 WHERE workflow IN ('reg_full', 'reg_alice_wf', 'reg_cap20') GROUP BY workflow ORDER BY workflow;

-- The error codes: 22023 for bad values, 42710 for duplicate ids, 42704
-- for a source naming no earlier activity, 0A000 for nested loops.
CREATE FUNCTION reg_sqlstate(def jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bf_register('reg_x', def);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT reg_sqlstate('{"nodes": [{"id": "a", "type": "task"}]}') AS bad_type,
       reg_sqlstate('{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}, {"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}') AS duplicate,
       reg_sqlstate('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"activity": "x"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}') AS unknown_source,
       reg_sqlstate('{"nodes": [{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"static": []}, "children": [{"id": "m", "type": "loop"}]}]}') AS nested;

-- Errors in the SQL text itself, from the grammar (42601) or the scanner
-- (22P06 below), are definition errors: 22023 with the parser's message
-- as detail.  (Errors not about the text, such as a query cancel, keep
-- their own SQLSTATE.)
SELECT reg_sqlstate('{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELEC 1"}]}') AS syntax_error,
       reg_sqlstate('{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT ''abc"}]}') AS unterminated,
       reg_sqlstate('{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1 +"}]}') AS incomplete;
SET backslash_quote = off;
SELECT bf_register('reg_x', '{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT E''it\\''s''"}]}');
RESET backslash_quote;

-- Clean up, so that the test can run again on the same database.
DELETE FROM batchflow.workflow WHERE name IN ('reg_full', 'reg_alice_wf', 'reg_cap20');
REVOKE USAGE ON SCHEMA batchflow FROM reg_alice;
DROP ROLE reg_alice;
DROP FUNCTION reg_sqlstate(jsonb);
