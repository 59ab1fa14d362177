-- Run control: bf_cancel, bf_retry and bf_wait's timeout.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- Calls a statement and shows what it returned, or its error (SQLSTATE,
-- message and hint) with the run id replaced by <run>.
CREATE FUNCTION eng_control_try(stmt text, run bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  result text;
  hint   text;
BEGIN
  EXECUTE stmt INTO result;
  RETURN 'returned ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
  RETURN format('%s: %s (hint: %s)', SQLSTATE, replace(SQLERRM, run::text, '<run>'), hint);
END
$$;

-- Twenty slow items (0.2 s each) at cap 2.  Item 5 also waits for an
-- advisory lock the test holds, so that it is certainly in flight when
-- bf_cancel is called.
CREATE TABLE eng_control_sink (idx int PRIMARY KEY, started timestamptz, finished timestamptz,
                               run bigint, xid xid8 NOT NULL DEFAULT pg_current_xact_id());
-- The exactly-once oracle: pg_temp.bf_exactly_once(run, node, effects).
\ir test/lib/exactly_once.sql
CREATE FUNCTION eng_control_gate(idx int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF idx = 5 THEN
    PERFORM pg_advisory_xact_lock_shared(7413001);
  END IF;
END
$$;
SELECT bf_register('eng_control_slow', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "n"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_control_sink SELECT $2, s, clock_timestamp(), ($3->>'run')::bigint FROM (SELECT clock_timestamp() s, pg_sleep(0.2), eng_control_gate($2)) x"}]}]}$j$) > 0 AS registered;
SELECT pg_advisory_lock(7413001);
SELECT bf_start('eng_control_slow', jsonb_build_object('n', (SELECT jsonb_agg(g) FROM generate_series(0, 19) g))) AS run \gset

-- While it runs: bf_wait with a short timeout returns the current status
-- after waiting that long, and bf_retry refuses a run that is not finished.
SELECT clock_timestamp() AS t0 \gset
SELECT bf_wait(:run, '300 milliseconds');
SELECT clock_timestamp() - :'t0' >= interval '300 milliseconds' AS waited_the_timeout;
SELECT eng_control_try(format('SELECT bf_retry(%s)', :run), :run);

-- Wait until item 5 is executing (blocked on the lock), then cancel.
DO $$
BEGIN
  FOR i IN 1..600 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM pg_locks
                       WHERE locktype = 'advisory' AND objid = 7413001 AND objsubid = 1
                         AND NOT granted);
    PERFORM pg_sleep(0.05);
  END LOOP;
END
$$;
SELECT bf_cancel(:run);
SELECT clock_timestamp() AS cancelled_at \gset
-- Let item 5 finish.
SELECT pg_advisory_unlock(7413001);
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT node_id, status, error FROM batchflow.loop WHERE run_id = :run;
-- The items in flight finished (item 5 among them, after the cancel);
-- none started after it; every other item was skipped.  Claims go in index
-- order, so the executed items are a prefix of the array.
SELECT count(*) FILTER (WHERE status = 'succeeded') >= 6 AS some_ran,
       count(*) FILTER (WHERE status = 'skipped') >= 1 AS some_skipped,
       count(*) FILTER (WHERE status NOT IN ('succeeded', 'skipped')) AS other,
       max(idx) FILTER (WHERE status = 'succeeded') + 1 = count(*) FILTER (WHERE status = 'succeeded') AS prefix_ran,
       min(idx) FILTER (WHERE status = 'skipped') = count(*) FILTER (WHERE status = 'succeeded') AS rest_skipped,
       count(*) FILTER (WHERE started_at >= :'cancelled_at') AS started_after_cancel,
       count(*) FILTER (WHERE status = 'skipped' AND (started_at IS NOT NULL OR attempts > 0)) AS skipped_but_started
  FROM batchflow.items WHERE run_id = :run;
SELECT i.status, s.started < :'cancelled_at' AS started_before_cancel,
       s.finished > :'cancelled_at' AS finished_after_cancel
  FROM batchflow.items i JOIN eng_control_sink s USING (idx)
 WHERE i.run_id = :run AND i.idx = 5;
SELECT (SELECT count(*) FROM eng_control_sink) =
       (SELECT count(*) FROM batchflow.items WHERE run_id = :run AND status = 'succeeded') AS sink_matches,
       (SELECT count(*) FROM eng_control_sink WHERE started >= :'cancelled_at') AS sink_started_after_cancel;

-- Cancelling a finished run does nothing and says so.
SELECT bf_cancel(:run) AS cancelled_again;
SELECT status FROM batchflow.runs WHERE id = :run;
SELECT eng_control_try('SELECT bf_cancel(-1)', -1);

-- A cancelled run can be resumed with bf_retry: the skipped items run, and
-- every item has taken effect once (the sink's primary key would fail a
-- second execution).
SELECT count(*) AS skipped FROM batchflow.items WHERE run_id = :run AND status = 'skipped' \gset
SELECT bf_retry(:run) = :skipped AS requeued_the_skipped;
SELECT bf_wait(:run, '1 minute');
SELECT status, count(*) FROM batchflow.items WHERE run_id = :run GROUP BY status;
SELECT count(*), count(DISTINCT idx), min(idx), max(idx) FROM eng_control_sink;
-- ... each in the transaction that recorded its completion, before the
-- cancel or after the retry.
SELECT * FROM pg_temp.bf_exactly_once(:run, 'each', 'eng_control_sink');
-- bf_retry of a succeeded run has nothing to re-queue; the run stays as it is.
SELECT bf_retry(:run) AS requeued;
SELECT status FROM batchflow.runs WHERE id = :run;

-- A cancel that commits only after the items in flight have ended: its
-- commit wakes the workers, which close the run.  With the safety-net poll
-- at its maximum (60 s), only that wake-up can close it within the 30 s
-- bf_wait gives it.
ALTER SYSTEM SET batchflow.poll_interval = '60s';
SELECT pg_reload_conf();
TRUNCATE eng_control_sink;
SELECT bf_register('eng_control_gated', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"static": [0, 1, 2, 3, 4, 5]},
   "children": [{"id": "gate", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_control_sink SELECT $2, s, clock_timestamp() FROM (SELECT clock_timestamp() s, pg_advisory_xact_lock_shared(7413001)) x"}]}]}$j$) > 0 AS registered;
SELECT pg_advisory_lock(7413001);
SELECT bf_start('eng_control_gated') AS run \gset
DO $$
BEGIN
  FOR i IN 1..600 LOOP
    EXIT WHEN (SELECT count(*) FROM pg_locks
                WHERE locktype = 'advisory' AND objid = 7413001 AND objsubid = 1
                  AND NOT granted) = 2;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
$$;
BEGIN;
SELECT bf_cancel(:run);
SELECT pg_advisory_unlock(7413001);
DO $$
BEGIN
  FOR i IN 1..600 LOOP
    EXIT WHEN (SELECT count(*) FROM eng_control_sink) = 2;
    PERFORM pg_sleep(0.05);
  END LOOP;
  PERFORM pg_sleep(0.2);
END
$$;
COMMIT;
SELECT bf_wait(:run, '30 seconds') AS closed_by_the_commits_wake_up;
ALTER SYSTEM RESET batchflow.poll_interval;
SELECT pg_reload_conf();
SELECT status, count(*) FROM batchflow.items WHERE run_id = :run GROUP BY status ORDER BY status;

-- bf_retry of a failed run: a fail-fast sequential loop where a flag
-- makes item 3 fail.  After fixing the flag, bf_retry re-queues the failed
-- item and the three skipped ones, and the run goes on to its next node,
-- which the failure had kept it from.
CREATE TABLE eng_control_flag (bad_idx int);
INSERT INTO eng_control_flag VALUES (3);
CREATE TABLE eng_control_done (idx int PRIMARY KEY);
CREATE FUNCTION eng_control_step(i int) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM eng_control_flag WHERE bad_idx = i) THEN
    RAISE EXCEPTION 'item % is flagged bad', i;
  END IF;
  INSERT INTO eng_control_done VALUES (i);
  RETURN i;
END
$$;
SELECT bf_register('eng_control_flaky', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [0, 1, 2, 3, 4, 5, 6]},
   "children": [{"id": "step", "type": "activity", "activity": "sql",
                 "sql": "SELECT eng_control_step($2)"}]},
  {"id": "after", "type": "activity", "activity": "sql",
   "sql": "INSERT INTO eng_control_done VALUES (100) RETURNING idx"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_control_flaky') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT status, count(*), min(idx), max(idx) FROM batchflow.items WHERE run_id = :run
 GROUP BY status ORDER BY min(idx);
DELETE FROM eng_control_flag;
SELECT bf_retry(:run) AS requeued;
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT loop_id, status, count(*), max(attempts) AS attempts FROM batchflow.items WHERE run_id = :run
 GROUP BY loop_id, status ORDER BY loop_id;
SELECT node_id, status FROM batchflow.loop WHERE run_id = :run ORDER BY node_index;
SELECT array_agg(idx ORDER BY idx) FROM eng_control_done;
-- The first attempt's error is kept.
SELECT idx, attempt, error FROM batchflow.item_error WHERE run_id = :run;

-- Clean up.
DROP FUNCTION eng_control_step(int);
DROP TABLE eng_control_flag, eng_control_done, eng_control_sink;
DROP FUNCTION eng_control_gate(int);
DELETE FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version
                       WHERE workflow IN ('eng_control_slow', 'eng_control_gated', 'eng_control_flaky'));
DELETE FROM batchflow.workflow WHERE name IN ('eng_control_slow', 'eng_control_gated', 'eng_control_flaky');
DROP FUNCTION eng_control_try(text, bigint);
