-- Least privilege and isolation between roles (issue 8).
--
-- Two plain roles, sec_alice and sec_bob, with nothing but USAGE on schema
-- batchflow (plus tables and a schema of their own).  Alice's activities
-- run as alice and nothing more; bob can neither see nor control alice's
-- runs, in the tables, the views or the bf_* functions; a superuser and
-- members of batchflow_admin see both; a role dropped while its run is
-- pending fails the run instead of running as someone else; names in the
-- caller's search_path never run with the extension owner's rights.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

CREATE ROLE sec_alice;
CREATE ROLE sec_bob;
CREATE ROLE sec_carol;
GRANT USAGE ON SCHEMA batchflow TO sec_alice, sec_bob, sec_carol;
CREATE SCHEMA sec_bob AUTHORIZATION sec_bob;
CREATE TABLE sec_alice_data (n int);
ALTER TABLE sec_alice_data OWNER TO sec_alice;
CREATE TABLE sec_bob_secret (n int);
ALTER TABLE sec_bob_secret OWNER TO sec_bob;

-- Run a statement; return 'ok' or its SQLSTATE, message (numbers masked:
-- run ids depend on earlier tests) and hint.
CREATE FUNCTION sec_try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || regexp_replace(msg, '[0-9]+', 'N', 'g') || coalesce(' / ' || nullif(hint, ''), '');
END
$$;

-- What an activity of alice's tries, one probe per item.  SECURITY INVOKER
-- (the default): it runs with the rights of whoever calls it.
CREATE FUNCTION sec_probe(n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    c bigint;
BEGIN
    CASE n
    WHEN 1 THEN SELECT count(*) INTO c FROM pg_authid;
    WHEN 2 THEN INSERT INTO sec_bob_secret VALUES (2);
    WHEN 3 THEN EXECUTE 'SET ROLE postgres';
    WHEN 4 THEN EXECUTE 'SET SESSION AUTHORIZATION postgres';
    WHEN 5 THEN CREATE TEMP TABLE sec_tmp (x int);
    WHEN 6 THEN INSERT INTO sec_alice_data VALUES (6); RETURN current_user;
    WHEN 7 THEN PERFORM set_config('work_mem', '1MB', false); RETURN current_setting('work_mem');
    WHEN 8 THEN RETURN current_setting('work_mem');
    WHEN 9 THEN RETURN current_setting('search_path');
    WHEN 10 THEN
        SELECT count(*) INTO c FROM batchflow.run
         WHERE owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user);
        RETURN c;
    END CASE;
    RETURN 'not refused';
END
$$;

-- bob has a run of his own first, so that alice's activities have
-- something of another role's to (not) see.
SET ROLE sec_bob;
SELECT bf_register('sec_bob_wf', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"variable": "xs"},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}]}') > 0 AS registered;
SELECT bf_start('sec_bob_wf', '{"xs": ["bob-secret"]}') AS bob_run \gset
SELECT bf_wait(:bob_run, '1 minute');
RESET ROLE;

-- 1. Alice's activities run as alice, with nothing more.
SET ROLE sec_alice;
SELECT bf_register('sec_alice_probe', '{"nodes": [
  {"id": "probe", "type": "loop", "loopType": "sequential", "errorStrategy": "continue",
   "inputSource": {"static": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
   "children": [{"id": "try", "type": "activity", "activity": "sql",
                 "sql": "SELECT sec_probe(($1)::int)"}]}]}') > 0 AS registered;
SELECT bf_start('sec_alice_probe', '{"note": "alice-secret"}') AS alice_run \gset
SELECT bf_wait(:alice_run, '1 minute');
SELECT idx + 1 AS probe, status, output, error FROM batchflow.items WHERE run_id = :alice_run ORDER BY idx;
SELECT e.idx + 1 AS probe, e.sqlstate FROM batchflow.item_error e WHERE e.run_id = :alice_run ORDER BY e.idx;
RESET ROLE;
SELECT count(*) AS bob_secret_rows FROM sec_bob_secret;
SELECT n AS alice_rows FROM sec_alice_data;

-- 2. bob sees none of alice's rows, in any table or view.
SET ROLE sec_bob;
SELECT (SELECT count(*) FROM batchflow.runs WHERE id = :alice_run) AS runs_view,
       (SELECT count(*) FROM batchflow.items WHERE run_id = :alice_run) AS items_view,
       (SELECT count(*) FROM batchflow.progress WHERE run_id = :alice_run) AS progress_view,
       (SELECT count(*) FROM batchflow.dashboard WHERE run = :alice_run) AS dashboard_view,
       (SELECT count(*) FROM batchflow.run WHERE id = :alice_run) AS run_table,
       (SELECT count(*) FROM batchflow.loop WHERE run_id = :alice_run) AS loop_table,
       (SELECT count(*) FROM batchflow.item WHERE run_id = :alice_run) AS item_table,
       (SELECT count(*) FROM batchflow.item_error WHERE run_id = :alice_run) AS error_table,
       (SELECT count(*) FROM batchflow.loop_progress WHERE run_id = :alice_run) AS progress_table,
       (SELECT count(*) FROM batchflow.workflow WHERE name = 'sec_alice_probe') AS workflow_table,
       (SELECT count(*) FROM batchflow.workflow_version WHERE workflow = 'sec_alice_probe') AS version_table;
-- ... while his own are there.
SELECT (SELECT count(*) FROM batchflow.runs WHERE id = :bob_run) AS runs_view,
       (SELECT count(*) FROM batchflow.items WHERE run_id = :bob_run) AS items_view,
       (SELECT count(*) FROM batchflow.run WHERE id = :bob_run) AS run_table,
       (SELECT count(*) FROM batchflow.item WHERE run_id = :bob_run) AS item_table;
-- Every row bob can read in the tables is his.
SELECT (SELECT count(*) FROM batchflow.run WHERE owner <> 'sec_bob'::regrole) AS others_runs,
       (SELECT count(*) FROM batchflow.workflow WHERE owner <> 'sec_bob'::regrole) AS others_workflows,
       (SELECT count(*) FROM batchflow.item i
         WHERE NOT EXISTS (SELECT 1 FROM batchflow.run r WHERE r.id = i.run_id)) AS orphan_items;

-- A function of bob's that reports what it is given, made as cheap as
-- possible so that the planner would like to run it first: it must never
-- be handed a row of alice's.
CREATE FUNCTION sec_bob.leak(v text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    IF v LIKE '%alice%' THEN
        RAISE NOTICE 'leaked: %', v;
    END IF;
    RETURN true;
END
$$;
SELECT count(*) FROM batchflow.runs WHERE sec_bob.leak(input::text);
SELECT count(*) FROM batchflow.run WHERE sec_bob.leak(input::text);
SELECT count(*) FROM batchflow.items WHERE sec_bob.leak(output::text);
SELECT count(*) FROM batchflow.item WHERE sec_bob.leak(output::text);
SELECT count(*) FROM batchflow.progress WHERE sec_bob.leak(run_id || ':' || (SELECT 'alice' WHERE run_id = :alice_run));
-- bob's own run, and the dashboard's first line (which says what is shown).
SELECT count(*) FROM batchflow.dashboard WHERE sec_bob.leak(workflow);

-- bob can neither control nor watch alice's run, nor start or change her workflow.
SELECT sec_try(format('SELECT bf_cancel(%s)', :alice_run)) AS bf_cancel;
SELECT sec_try(format('SELECT bf_retry(%s)', :alice_run)) AS bf_retry;
SELECT sec_try(format('SELECT bf_wait(%s, ''1 second'')', :alice_run)) AS bf_wait;
SELECT sec_try(format('SELECT * FROM bf_progress(%s)', :alice_run)) AS bf_progress;
SELECT sec_try(format('SELECT * FROM bf_report(%s)', :alice_run)) AS bf_report;
SELECT sec_try(format('SELECT * FROM bf_summary(%s)', :alice_run)) AS bf_summary;
SELECT sec_try('SELECT bf_start(''sec_alice_probe'')') AS bf_start;
SELECT sec_try('SELECT bf_register(''sec_alice_probe'', ''{"nodes": [{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}'')') AS bf_register;
-- Nor write the tables directly, nor raise the limits.
SELECT sec_try(format('UPDATE batchflow.run SET status = ''cancelled'' WHERE id = %s', :alice_run)) AS update_run;
SELECT sec_try('DELETE FROM batchflow.item') AS delete_items;
SELECT sec_try('SET batchflow.max_items_per_run = 2000000000') AS raise_limit;

-- 3. bob's functions never run with the extension owner's rights: with a
-- format(text, text, text, text) of his own first in search_path, a run
-- whose loop input is not an array (the error message is formatted as the
-- extension owner) must not call it: neither bf_start, which refuses such
-- an input for the first node, nor batchflow._advance, which fails the run
-- when a later node is reached.
CREATE FUNCTION sec_bob.format(text, text, text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'bob''s format ran as %', current_user;
    RETURN 'hijacked';
END
$$;
SELECT bf_register('sec_bob_later', '{"nodes": [
  {"id": "first", "type": "activity", "activity": "sql", "sql": "SELECT 1"},
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"variable": "xs"},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}]}') > 0 AS registered;
SET search_path = sec_bob, pg_catalog, public;
SELECT bf_start('sec_bob_wf', '{"xs": 5}');
SELECT bf_start('sec_bob_later', '{"xs": 5}') AS bad_run \gset
SELECT bf_wait(:bad_run, '1 minute');
RESET search_path;
SELECT status, error FROM batchflow.runs WHERE id = :bad_run;
RESET ROLE;

-- 4. The owner, a superuser and members of batchflow_admin see both.
SET ROLE sec_alice;
SELECT count(*) AS alice_sees FROM batchflow.runs WHERE id IN (:alice_run, :bob_run);
RESET ROLE;
SELECT count(*) AS superuser_sees FROM batchflow.runs WHERE id IN (:alice_run, :bob_run);
SELECT count(*) AS superuser_sees_items FROM batchflow.item WHERE run_id IN (:alice_run, :bob_run);
GRANT batchflow_admin TO sec_bob;
SET ROLE sec_bob;
SELECT count(*) AS admin_sees FROM batchflow.runs WHERE id IN (:alice_run, :bob_run);
SELECT count(*) AS admin_sees_items FROM batchflow.item WHERE run_id = :alice_run;
SELECT loop_id, status, total, completed, failed FROM bf_progress(:alice_run);
SELECT count(*) AS admin_report_rows FROM bf_report(:alice_run);
RESET ROLE;
REVOKE batchflow_admin FROM sec_bob;
SET ROLE sec_bob;
SELECT count(*) AS after_revoke FROM batchflow.runs WHERE id = :alice_run;
RESET ROLE;

-- 5. A role dropped while its run is pending: the run fails with a clear
-- error, at the first item, whatever the error strategy (retry here), and
-- nothing runs as anyone else.
CREATE TABLE sec_carol_log (who name);
GRANT INSERT ON sec_carol_log TO sec_carol;
SET ROLE sec_carol;
SELECT bf_register('sec_carol_wf', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "errorStrategy": "retry", "maxRetries": 3, "retryDelayMs": 10,
   "inputSource": {"static": [1, 2, 3]},
   "children": [{"id": "log", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sec_carol_log VALUES (current_user)"}]}]}') > 0 AS registered;
BEGIN;
SELECT bf_start('sec_carol_wf') AS carol_run \gset
RESET ROLE;
REVOKE ALL ON SCHEMA batchflow FROM sec_carol;
REVOKE ALL ON sec_carol_log FROM sec_carol;
DROP ROLE sec_carol;
COMMIT;
SELECT bf_wait(:carol_run, '1 minute');
SELECT status, regexp_replace(error, '[0-9]+', 'N', 'g') AS error FROM batchflow.runs WHERE id = :carol_run;
SELECT idx, status, attempts FROM batchflow.items WHERE run_id = :carol_run ORDER BY idx;
SELECT sqlstate, count(*) FROM batchflow.item_error WHERE run_id = :carol_run GROUP BY sqlstate;
SELECT count(*) AS carol_log_rows FROM sec_carol_log;

-- 6. Hostile items are inert: they reach SQL only as the parameter $1,
-- and come back out exactly as they went in.  Among them a 10 MB string
-- and an array nested 10,000 levels deep (jsonb takes that; around
-- 100,000 levels its parser stops with "stack depth limit exceeded").
CREATE TABLE sec_alice_sink (idx int PRIMARY KEY, v jsonb, t text);
ALTER TABLE sec_alice_sink OWNER TO sec_alice;
SET ROLE sec_alice;
SELECT bf_register('sec_alice_hostile', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "xs"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sec_alice_sink VALUES ($2, $1, $1 #>> ''{}'') RETURNING octet_length(t)"}]}]}') > 0 AS registered;
SELECT bf_start('sec_alice_hostile', jsonb_build_object('xs', jsonb_build_array(
    $x$'); DROP TABLE sec_alice_sink; --$x$,
    '{{item}} {{item.x}} {{index}} {{run}}',
    E'back\\slash \\\\ \\n '' " $1 %s %n \\u0000',
    'héllo wörld ✓ 😀 עברית ‮RTL‏ zero​width 𝕏 ﷽',
    '{"$1": "$2", "sql": "SELECT 1; DROP TABLE sec_alice_sink", "{{item}}": null}'::jsonb,
    (repeat('[', 10000) || '"deep"' || repeat(']', 10000))::jsonb,
    repeat('x', 10 * 1024 * 1024),
    1e300::numeric))) AS hostile_run \gset
SELECT bf_wait(:hostile_run, '2 minutes');
SELECT idx, octet_length(t) AS bytes, CASE WHEN idx < 5 THEN t END AS t
  FROM sec_alice_sink ORDER BY idx;
-- Every item stored is the item given, and the output is its text's length.
SELECT count(*) AS items, bool_and(s.v = x.value) AS same_items,
       bool_and(i.output = to_jsonb(octet_length(s.t))) AS outputs
  FROM batchflow.runs r
 CROSS JOIN LATERAL jsonb_array_elements(r.input -> 'xs') WITH ORDINALITY AS x(value, ord)
  JOIN sec_alice_sink s ON s.idx = x.ord - 1
  JOIN batchflow.items i ON i.run_id = r.id AND i.idx = s.idx
 WHERE r.id = :hostile_run;
SELECT jsonb_path_query_first(v, 'strict $.**{9999}') AS deepest FROM sec_alice_sink WHERE idx = 5;
RESET ROLE;

-- 7. The limits, each an error that names its setting.
\set SHOW_CONTEXT never
SELECT bf_register('sec_limits', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "xs"},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT $2"}]}]}') > 0 AS registered;
-- batchflow.max_items_per_run: bf_start refuses, and creates nothing.
SELECT count(*) AS runs_before FROM batchflow.run \gset
SET batchflow.max_items_per_run = 5;
SELECT bf_start('sec_limits', '{"xs": [1, 2, 3, 4, 5, 6]}');
SELECT bf_start('sec_limits', '{"xs": [1, 2, 3, 4, 5]}') IS NOT NULL AS five_is_fine;
-- A million items against a limit one lower: refused before any is written.
SET batchflow.max_items_per_run = 999999;
SELECT bf_start('sec_limits', jsonb_build_object('xs', (SELECT jsonb_agg(g) FROM generate_series(1, 1000000) g)));
RESET batchflow.max_items_per_run;
SELECT count(*) - :runs_before AS runs_created FROM batchflow.run;
-- batchflow.max_item_size, at bf_start ...
SET batchflow.max_item_size = '1kB';
SELECT bf_start('sec_limits', jsonb_build_object('xs', jsonb_build_array(1, repeat('x', 2000))));
RESET batchflow.max_item_size;
-- ... and for a loop reached later by a worker (default limit, 16 MB): the
-- run fails with the same message.
SELECT bf_register('sec_limits_later', '{"nodes": [
  {"id": "make", "type": "activity", "activity": "sql",
   "sql": "SELECT jsonb_build_array(1, repeat(''x'', 17 * 1024 * 1024))", "output": "big"},
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "big"},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT $2"}]}]}') > 0 AS registered;
SELECT bf_start('sec_limits_later') AS later_run \gset
SELECT bf_wait(:later_run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :later_run;
SELECT count(*) AS later_items FROM batchflow.items WHERE run_id = :later_run AND loop_id = 'each';
-- batchflow.max_definition_size
SET batchflow.max_definition_size = '1kB';
SELECT bf_register('sec_limits_big', jsonb_build_object('description', repeat('x', 2000),
    'nodes', '[{"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]'::jsonb));
RESET batchflow.max_definition_size;
\set SHOW_CONTEXT errors
SELECT name, setting, unit, context FROM pg_settings
 WHERE name IN ('batchflow.max_items_per_run', 'batchflow.max_item_size', 'batchflow.max_definition_size')
 ORDER BY name;

-- 8. Every table of the extension has row-level security, and every view
-- the public may read either reads as its caller or is a security barrier
-- (a table or view added later must not open a hole).
SELECT c.relname AS table_without_rls
  FROM pg_class c
 WHERE c.relnamespace = 'batchflow'::regnamespace AND c.relkind IN ('r', 'p')
   AND NOT c.relrowsecurity;
SELECT c.relname AS leaky_view
  FROM pg_class c
 WHERE c.relnamespace = 'batchflow'::regnamespace AND c.relkind = 'v'
   AND has_table_privilege('public', c.oid, 'SELECT')
   AND NOT coalesce(c.reloptions && ARRAY['security_invoker=true', 'security_barrier=true'], false);
-- No function of the extension is SECURITY DEFINER.
SELECT p.oid::regprocedure AS security_definer
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'batchflow')
   AND p.prosecdef;

-- Clean up.
SET client_min_messages = warning;
DELETE FROM batchflow.run WHERE version_id IN
    (SELECT id FROM batchflow.workflow_version WHERE workflow LIKE 'sec\_%');
DELETE FROM batchflow.workflow WHERE name LIKE 'sec\_%';
DROP FUNCTION sec_try(text), sec_probe(int);
DROP TABLE sec_alice_data, sec_bob_secret, sec_carol_log, sec_alice_sink;
DROP SCHEMA sec_bob CASCADE;
REVOKE ALL ON SCHEMA batchflow FROM sec_alice, sec_bob;
DROP ROLE sec_alice;
DROP ROLE sec_bob;
RESET client_min_messages;
