-- The per-loop cap, measured: every item records when its SQL started and
-- ended; a sweep over those events gives the largest number of items that
-- executed at the same instant.  It must equal the cap: reach it (a freed
-- slot is refilled at once) and never exceed it.  Needs more workers than
-- the largest cap tested, 10, or the pool and not the cap would bound the
-- overlap: scripts/test.sh starts the cluster with batchflow.max_workers =
-- 12 (BF_MAX_WORKERS).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

SELECT current_setting('batchflow.max_workers')::int > 10 AS more_workers_than_the_largest_cap;

CREATE TABLE eng_overlap_t (tag text NOT NULL, idx int NOT NULL, s timestamptz NOT NULL,
                            e timestamptz NOT NULL, PRIMARY KEY (tag, idx));
-- The largest number of [s, e) intervals of one tag open at one instant.
-- At equal timestamps an end sorts before a start: intervals that only
-- touch do not overlap.
CREATE FUNCTION eng_overlap_max(p_tag text) RETURNS bigint
LANGUAGE sql AS $$
  SELECT max(open) FROM (
    SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS open
      FROM (SELECT s AS at, 1 AS delta FROM eng_overlap_t WHERE tag = p_tag
            UNION ALL
            SELECT e, -1 FROM eng_overlap_t WHERE tag = p_tag) ev) x
$$;
-- n items of 100 ms at cap c, tagged with the item itself.
CREATE FUNCTION eng_overlap_def(c int, ms int) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object(
    'id', 'each', 'type', 'loop', 'loopType', 'parallel', 'concurrency', c,
    'inputSource', jsonb_build_object('variable', 'items'),
    'children', jsonb_build_array(jsonb_build_object(
      'id', 'nap', 'type', 'activity', 'activity', 'sql',
      'sql', format('INSERT INTO eng_overlap_t SELECT $1 #>> ''{}'', $2, s, clock_timestamp()'
                    ' FROM (SELECT clock_timestamp() s, pg_sleep(%s)) x', ms / 1000.0))))))
$$;
CREATE FUNCTION eng_overlap_items(tag text, n int) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('items', jsonb_agg(to_jsonb(tag))) FROM generate_series(1, n)
$$;

-- 40 items at cap 4.
SELECT bf_register('eng_overlap_cap4', eng_overlap_def(4, 100)) > 0 AS registered;
SELECT bf_start('eng_overlap_cap4', eng_overlap_items('cap4', 40)) AS run \gset
SELECT bf_wait(:run, '2 minutes');
SELECT count(*) AS items, eng_overlap_max('cap4') AS max_overlap FROM eng_overlap_t WHERE tag = 'cap4';

-- 60 items at cap 10, served by a pool of more than 10 workers.
SELECT bf_register('eng_overlap_cap10', eng_overlap_def(10, 100)) > 0 AS registered;
SELECT bf_start('eng_overlap_cap10', eng_overlap_items('cap10', 60)) AS run \gset
SELECT bf_wait(:run, '2 minutes');
SELECT count(*) AS items, eng_overlap_max('cap10') AS max_overlap FROM eng_overlap_t WHERE tag = 'cap10';

-- Fairness: two runs started together, 20 items of 50 ms at cap 2 each.
-- The second does not wait for the first: their items interleave in time,
-- and each runs at its own cap.
SELECT bf_register('eng_overlap_fair', eng_overlap_def(2, 50)) > 0 AS registered;
BEGIN;
SELECT bf_start('eng_overlap_fair', eng_overlap_items('fair a', 20)) AS run_a \gset
SELECT bf_start('eng_overlap_fair', eng_overlap_items('fair b', 20)) AS run_b \gset
COMMIT;
SELECT bf_wait(:run_a, '2 minutes'), bf_wait(:run_b, '2 minutes');
SELECT tag, count(*) AS items, eng_overlap_max(tag) AS max_overlap
  FROM eng_overlap_t WHERE tag LIKE 'fair%' GROUP BY tag ORDER BY tag;
SELECT b.first_start < a.last_start AS b_started_before_a_ended,
       a.first_start < b.last_start AS a_started_before_b_ended,
       (SELECT count(*) FROM eng_overlap_t WHERE tag = 'fair b' AND s < a.last_start) >= 5 AS b_progressed_while_a_ran,
       (SELECT count(*) FROM eng_overlap_t WHERE tag = 'fair a' AND s < b.last_start) >= 5 AS a_progressed_while_b_ran
  FROM (SELECT min(s) AS first_start, max(s) AS last_start FROM eng_overlap_t WHERE tag = 'fair a') a,
       (SELECT min(s) AS first_start, max(s) AS last_start FROM eng_overlap_t WHERE tag = 'fair b') b;

-- Fairness under contention: two runs of 30 items at cap 8 each want 16
-- workers of a pool of 12.  Neither starves: both have items executing at
-- the same time, and neither goes past its cap.
SELECT bf_register('eng_overlap_busy', eng_overlap_def(8, 50)) > 0 AS registered;
BEGIN;
SELECT bf_start('eng_overlap_busy', eng_overlap_items('busy a', 30)) AS run_a \gset
SELECT bf_start('eng_overlap_busy', eng_overlap_items('busy b', 30)) AS run_b \gset
COMMIT;
SELECT bf_wait(:run_a, '2 minutes'), bf_wait(:run_b, '2 minutes');
SELECT tag, count(*) AS items, eng_overlap_max(tag) <= 8 AS within_cap
  FROM eng_overlap_t WHERE tag LIKE 'busy%' GROUP BY tag ORDER BY tag;
SELECT (SELECT count(*) FROM eng_overlap_t WHERE tag = 'busy b' AND s < a.last_start) >= 5 AS b_progressed_while_a_ran,
       (SELECT count(*) FROM eng_overlap_t WHERE tag = 'busy a' AND s < b.last_start) >= 5 AS a_progressed_while_b_ran
  FROM (SELECT max(s) AS last_start FROM eng_overlap_t WHERE tag = 'busy a') a,
       (SELECT max(s) AS last_start FROM eng_overlap_t WHERE tag = 'busy b') b;

DROP FUNCTION eng_overlap_max(text), eng_overlap_def(int, int), eng_overlap_items(text, int);
DROP TABLE eng_overlap_t;
DELETE FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version WHERE workflow LIKE 'eng\_overlap\_%');
DELETE FROM batchflow.workflow WHERE name LIKE 'eng\_overlap\_%';
