-- Activities run as the role that called bf_start, never as the superuser
-- the workers connect as.  A plain role with USAGE on schema batchflow
-- registers, starts and watches its own workflows.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

CREATE ROLE eng_roles_alice LOGIN;
GRANT USAGE ON SCHEMA batchflow TO eng_roles_alice;
-- A table alice may write to, and one she has no rights on.
CREATE TABLE eng_roles_mine (idx int PRIMARY KEY, who name);
GRANT SELECT, INSERT ON eng_roles_mine TO eng_roles_alice;
CREATE TABLE eng_roles_secret (idx int);
-- Calls a statement and shows its result, or its error (SQLSTATE and
-- message, with the run id replaced by <run>).
CREATE FUNCTION eng_roles_try(stmt text, run bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  result text;
BEGIN
  EXECUTE stmt INTO result;
  RETURN 'returned ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
  RETURN format('%s: %s', SQLSTATE, replace(SQLERRM, run::text, '<run>'));
END
$$;
-- A run of the superuser's own, which alice must not see or control.
SELECT bf_register('eng_roles_admin_wf', $j${"nodes": [
  {"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT current_user"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_roles_admin_wf') AS admin_run \gset
SELECT bf_wait(:admin_run, '1 minute');

SET ROLE eng_roles_alice;

-- Register and start, as alice.  The items record who they run as.
SELECT bf_register('eng_roles_whoami', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"static": ["a", "b", "c"]},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_roles_mine SELECT $2, current_user RETURNING who"}]},
  {"id": "me", "type": "activity", "activity": "sql", "sql": "SELECT current_user", "output": "me"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_roles_whoami') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT workflow, status, owner, error, vars FROM batchflow.runs WHERE id = :run;
SELECT loop_id, idx, status, output FROM batchflow.items WHERE run_id = :run ORDER BY loop_id, idx;
SELECT idx, who FROM eng_roles_mine ORDER BY idx;

-- Reading pg_authid needs superuser: the activity fails with permission
-- denied, recorded on the item and the run.
SELECT bf_register('eng_roles_authid', $j${"nodes": [
  {"id": "peek", "type": "activity", "activity": "sql",
   "sql": "SELECT count(*) FROM pg_authid"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_roles_authid') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT loop_id, status, attempts, error FROM batchflow.items WHERE run_id = :run;
SELECT loop_id, idx, attempts, error FROM bf_report(:run);

-- Writing to a table alice has no rights on fails the same way, for every
-- item, and nothing is written; nor can an activity switch to another role.
SELECT bf_register('eng_roles_secret', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "errorStrategy": "continue",
   "inputSource": {"static": [1, 2, 3]},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_roles_secret VALUES ($2)"}]},
  {"id": "escalate", "type": "activity", "activity": "sql",
   "sql": "SELECT set_config('role', 'postgres', true)"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_roles_secret') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT loop_id, status, count(*), min(error), max(error) FROM batchflow.items WHERE run_id = :run
 GROUP BY loop_id, status ORDER BY loop_id;

-- Alice sees only her own runs, and cannot act on the superuser's.
SELECT workflow, status FROM batchflow.runs ORDER BY id;
SELECT count(*) AS admin_items_visible FROM batchflow.items WHERE run_id = :admin_run;
SELECT eng_roles_try(format('SELECT bf_wait(%s, ''1 second'')', :admin_run), :admin_run);
SELECT eng_roles_try(format('SELECT bf_cancel(%s)', :admin_run), :admin_run);
SELECT eng_roles_try(format('SELECT bf_retry(%s)', :admin_run), :admin_run);
SELECT eng_roles_try('SELECT bf_start(''eng_roles_admin_wf'')', 0);

RESET ROLE;
-- Nothing reached the secret table; the run owner is recorded as alice.
SELECT count(*) AS secret_rows FROM eng_roles_secret;
SELECT owner::regrole, count(*) FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version WHERE workflow LIKE 'eng\_roles\_%')
 GROUP BY owner ORDER BY owner::regrole::text;

-- Clean up.
DELETE FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version WHERE workflow LIKE 'eng\_roles\_%');
DELETE FROM batchflow.workflow WHERE name LIKE 'eng\_roles\_%';
DROP TABLE eng_roles_mine, eng_roles_secret;
DROP FUNCTION eng_roles_try(text, bigint);
DROP OWNED BY eng_roles_alice;
DROP ROLE eng_roles_alice;
