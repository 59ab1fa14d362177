-- bf_start is transactional: a rolled-back start leaves nothing and runs
-- nothing; a committed one starts at once.  Also from inside functions,
-- a subtransaction that rolls back, and a row trigger.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- Every item writes its own value: the rows tell which run executed.
CREATE TABLE eng_txn_sink (tag text NOT NULL, idx int NOT NULL, UNIQUE (tag, idx));
SELECT bf_register('eng_txn_wf', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "tags"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_txn_sink VALUES ($1 ->> 0, $2)"}]}]}$j$) > 0 AS registered;
CREATE FUNCTION eng_txn_input(tag text, n int) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('tags', jsonb_agg(jsonb_build_array(tag)))
    FROM generate_series(1, n)
$$;

-- Rolled back: inside the transaction the run and its items exist...
BEGIN;
SELECT bf_start('eng_txn_wf', eng_txn_input('rolled back', 5)) AS run \gset
SELECT status FROM batchflow.runs WHERE id = :run;
SELECT count(*) AS pending_items FROM batchflow.item WHERE run_id = :run AND status = 'pending';
ROLLBACK;
-- ...and afterwards nothing is left of it.
SELECT count(*) AS runs FROM batchflow.run WHERE id = :run;
SELECT count(*) AS loops FROM batchflow.loop WHERE run_id = :run;
SELECT count(*) AS items FROM batchflow.item WHERE run_id = :run;
SELECT count(*) AS runs_of_workflow FROM batchflow.runs WHERE workflow = 'eng_txn_wf';

-- Committed: its commit, and nothing earlier, wakes the workers.  With the
-- safety-net poll at its maximum (60 s) an idle worker runs a step only
-- when its latch is set, and every step leaves its end in
-- pg_stat_activity.state_change.  So: no worker may have run a step while
-- the start was not committed yet (a wake-up before the commit would find
-- nothing to claim and sleep), and the run must finish long before the
-- next poll (only the commit's wake-up can have started it).  Three runs,
-- each held uncommitted for 0.3 s.
ALTER SYSTEM SET batchflow.poll_interval = '60s';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);	-- the workers run one step on the reload, then sleep
CREATE FUNCTION eng_txn_steps_since(t timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_stat_clear_snapshot();
  RETURN (SELECT count(*) FROM pg_stat_activity
           WHERE backend_type = 'batchflow worker' AND state_change >= t);
END
$$;
CREATE TABLE eng_txn_woken (run bigint, steps_before_commit bigint, all_asleep boolean);
-- Start a run, hold it uncommitted for 0.3 s, and count the workers that
-- ran a step meanwhile.  First wait until every worker of the pool runs
-- and is asleep: a worker that executed an item goes on to one more step,
-- which finds nothing (it then shows 'batchflow: claiming', or, from
-- transactions that end such a step, 'batchflow: closing loop',
-- 'batchflow: writing progress' or 'batchflow: listing loops to fill', or
-- 'batchflow: warming up' once per worker, as its last query) before it
-- sleeps; on a
-- loaded machine that step can come a while after the run ended.  A
-- worker that found the loop being closed by another session sleeps only
-- 50 ms before it looks again (also in its latch wait, after 'closing
-- loop'), and with the CPUs busy it may get to run that look well after
-- its timeout: so asleep is waiting on its latch (wait event Extension)
-- after such a step, with no step for a full second.  A worker not
-- started yet would run its first step in the window, so all of the pool
-- must be there.  The test records whether that state was reached: a step
-- counted after a wait that gave up would say nothing about the commit.
CREATE FUNCTION eng_txn_start_held(tag text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz;
  r bigint;
  asleep boolean := false;
BEGIN
  FOR i IN 1..1200 LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT count(*) = current_setting('batchflow.max_workers')::int
           AND bool_and(state = 'idle'
                        AND query IN ('batchflow: claiming', 'batchflow: closing loop',
                                      'batchflow: writing progress',
                                      'batchflow: listing loops to fill',
                                      'batchflow: warming up')
                        AND wait_event_type IS NOT DISTINCT FROM 'Extension'
                        AND state_change <= clock_timestamp() - interval '1 second')
      INTO asleep
      FROM pg_stat_activity WHERE backend_type = 'batchflow worker';
    EXIT WHEN asleep;
    PERFORM pg_sleep(0.05);
  END LOOP;
  t0 := clock_timestamp();
  r := bf_start('eng_txn_wf', eng_txn_input(tag, 3));
  PERFORM pg_sleep(0.3);
  INSERT INTO eng_txn_woken VALUES (r, eng_txn_steps_since(t0), asleep);
END
$$;
SELECT eng_txn_start_held('committed 1');
SELECT bf_wait(run, '30 seconds') FROM eng_txn_woken WHERE run = (SELECT max(run) FROM eng_txn_woken);
SELECT eng_txn_start_held('committed 2');
SELECT bf_wait(run, '30 seconds') FROM eng_txn_woken WHERE run = (SELECT max(run) FROM eng_txn_woken);
SELECT eng_txn_start_held('committed 3');
SELECT bf_wait(run, '30 seconds') FROM eng_txn_woken WHERE run = (SELECT max(run) FROM eng_txn_woken);
SELECT count(*) AS runs, bool_and(all_asleep) AS workers_asleep_at_each_start,
       sum(steps_before_commit) AS worker_steps_before_commit
  FROM eng_txn_woken;
ALTER SYSTEM RESET batchflow.poll_interval;
SELECT pg_reload_conf();
DROP TABLE eng_txn_woken;
DROP FUNCTION eng_txn_start_held(text);
DROP FUNCTION eng_txn_steps_since(timestamptz);
-- Their items ran, the rolled-back run's never did (the workers have been
-- busy with three later runs and idle since; give them a moment more).
SELECT pg_sleep(0.3);
SELECT tag, count(*) FROM eng_txn_sink GROUP BY tag ORDER BY tag;

-- From a function: an error after bf_start aborts the statement and takes
-- the run with it.
CREATE FUNCTION eng_txn_start_then_fail(tag text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  r bigint;
BEGIN
  r := bf_start('eng_txn_wf', eng_txn_input(tag, 2));
  RAISE EXCEPTION 'changed my mind about run %', r USING ERRCODE = 'raise_exception';
END
$$;
SELECT max(id) AS before_max FROM batchflow.run \gset
\set VERBOSITY sqlstate
SELECT eng_txn_start_then_fail('function failed');
\set VERBOSITY default
SELECT count(*) AS new_runs FROM batchflow.run WHERE id > :before_max;

-- A subtransaction rolled back inside a function that then returns
-- normally: the run started in the subtransaction vanishes, the one
-- started after it (same transaction) is kept and runs.
CREATE FUNCTION eng_txn_start_in_subxact() RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    PERFORM bf_start('eng_txn_wf', eng_txn_input('subxact rolled back', 2));
    RAISE EXCEPTION 'roll the block back';
  EXCEPTION WHEN raise_exception THEN
    NULL;
  END;
  RETURN bf_start('eng_txn_wf', eng_txn_input('subxact survivor', 2));
END
$$;
SELECT eng_txn_start_in_subxact() AS run \gset
SELECT count(*) AS new_runs, bool_and(id = :run) AS only_the_survivor
  FROM batchflow.run WHERE id > :before_max;
SELECT bf_wait(:run, '1 minute');

-- bf_wait on a run started in its own transaction would never return: it
-- is refused.
DO $$
BEGIN
  PERFORM bf_wait(bf_start('eng_txn_wf', eng_txn_input('never waited for', 1)), '5 seconds');
EXCEPTION WHEN object_not_in_prerequisite_state THEN
  RAISE NOTICE 'refused: %', regexp_replace(SQLERRM, '[0-9]+', 'N');
END
$$;

-- From a row trigger: one run per inserted row, only if the insert commits.
CREATE TABLE eng_txn_order (id int PRIMARY KEY, copies int NOT NULL);
CREATE FUNCTION eng_txn_order_start() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM bf_start('eng_txn_wf', eng_txn_input('order ' || NEW.id, NEW.copies));
  RETURN NULL;
END
$$;
CREATE TRIGGER eng_txn_order_start AFTER INSERT ON eng_txn_order
  FOR EACH ROW EXECUTE FUNCTION eng_txn_order_start();
SELECT max(id) AS before_max FROM batchflow.run \gset
BEGIN;
INSERT INTO eng_txn_order VALUES (1, 3), (2, 4);
SELECT count(*) AS runs_in_txn FROM batchflow.run WHERE id > :before_max;
ROLLBACK;
SELECT count(*) AS runs_after_rollback FROM batchflow.run WHERE id > :before_max;
INSERT INTO eng_txn_order VALUES (3, 2), (4, 5);
SELECT bf_wait(id, '1 minute') FROM batchflow.run WHERE id > :before_max ORDER BY id;
SELECT pg_sleep(0.3);
SELECT tag, count(*) FROM eng_txn_sink GROUP BY tag ORDER BY tag;

DROP TABLE eng_txn_order;
DROP FUNCTION eng_txn_order_start();
DROP FUNCTION eng_txn_start_in_subxact();
DROP FUNCTION eng_txn_start_then_fail(text);
DROP TABLE eng_txn_sink;
DELETE FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version WHERE workflow = 'eng_txn_wf');
DELETE FROM batchflow.workflow WHERE name = 'eng_txn_wf';
DROP FUNCTION eng_txn_input(text, int);
