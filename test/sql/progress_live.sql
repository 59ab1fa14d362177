-- Progress while a run executes and once it has finished: bf_progress
-- sampled mid-run (counts, items executing under the cap, percent), the
-- dashboard line of a running and of a finished run, and the per-loop
-- duration percentiles of batchflow.loop_stats.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- 40 items of 0.1 s at concurrency 4.  Items 21 to 40 first wait for a
-- gate (an advisory lock this session holds) that the poll below opens
-- only once it has sampled the run mid-way, or after 60 s: the run cannot
-- end between two samples however long the poll is kept off the CPU
-- (a free-running run lasts about 1 s, which a starved poll can miss).
SELECT bf_register('progress_live_nap', $j${"nodes": [
  {"id": "nap", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "things"},
   "children": [{"id": "sleep", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.1), CASE WHEN ($1)::int > 20 THEN pg_advisory_xact_lock_shared(7001, 40)::text END"}]}]}$j$) > 0 AS registered;

-- Samples of bf_progress and of the run's dashboard line, taken every
-- 20 ms until the run ends (or 60 s pass).  The first sample strictly
-- between 0 and 40 items done opens the gate.
CREATE TABLE progress_live_sample (
    n int, status text, total bigint, completed bigint, failed bigint,
    active int, percent numeric, items_per_sec numeric, elapsed interval, eta interval,
    dash_lines int, dash_progress text, dash_percent numeric, dash_items text,
    dash_active int);
CREATE FUNCTION progress_live_poll(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    d record;
    n int := 0;
    gated boolean := true;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        n := n + 1;
        SELECT * INTO p FROM bf_progress(p_run);
        SELECT count(*) OVER () AS lines, * INTO d FROM batchflow.dashboard WHERE run = p_run;
        INSERT INTO progress_live_sample
        VALUES (n, p.status, p.total, p.completed, p.failed, p.active, p.percent,
                p.items_per_sec, p.elapsed, p.eta,
                d.lines, d.progress, d.percent, d.items, d.active);
        IF gated AND ((p.completed + p.failed > 0 AND p.completed + p.failed < p.total)
                      OR clock_timestamp() > t0 + interval '60 seconds') THEN
            gated := NOT pg_advisory_unlock(7001, 40);
        END IF;
        EXIT WHEN p.status <> 'running' OR clock_timestamp() > t0 + interval '60 seconds';
        PERFORM pg_sleep(0.02);
    END LOOP;
    IF gated THEN
        PERFORM pg_advisory_unlock(7001, 40);
    END IF;
END;
$$;

SELECT pg_advisory_lock(7001, 40);
SELECT bf_start('progress_live_nap',
                jsonb_build_object('things', (SELECT jsonb_agg(g) FROM generate_series(1, 40) g))) AS run \gset
SELECT progress_live_poll(:run);
SELECT bf_wait(:run, '1 minute');

-- Mid-run: some samples strictly between 0 and 40 items done, every one of
-- them with between 1 and 4 items executing, and the cap never exceeded.
SELECT count(*) FILTER (WHERE completed + failed > 0 AND completed + failed < total) >= 1 AS seen_mid_run,
       bool_and(total = 40) AS total_40,
       bool_and(active BETWEEN 1 AND 4)
           FILTER (WHERE completed + failed > 0 AND completed + failed < total) AS active_1_to_4_mid_run,
       max(active) <= 4 AS cap_never_exceeded,
       bool_and(failed = 0) AS no_failures,
       bool_and(percent = round(100.0 * (completed + failed) / total, 1)) AS percent_matches_counts,
       bool_and(elapsed >= '0') AS elapsed_set
  FROM progress_live_sample;

-- While running, the dashboard has exactly one line for the run, whose bar,
-- percent and "done/total" agree with bf_progress.
SELECT bool_and(dash_lines = 1) AS one_line_per_run,
       bool_and(dash_progress ~ '^\[#*\.*\]$' AND length(dash_progress) = 22) AS bar_shape,
       bool_and(dash_progress = batchflow.progress_bar(dash_percent)) AS bar_matches_percent,
       bool_and(dash_items ~ '^[0-9]+/40$') AS items_shape,
       bool_and(dash_active BETWEEN 0 AND 4) AS dash_active_in_cap
  FROM progress_live_sample
 WHERE status = 'running';

-- Finished: 100 %, every item completed, nothing executing, ETA 0.
SELECT loop_id, status, total, completed, failed, active, percent,
       items_per_sec > 0 AS has_rate, elapsed >= interval '1 second' AS took_1s_or_more, eta
  FROM bf_progress(:run);

-- The finished run's dashboard line: only its deterministic columns.
SELECT workflow, status, node, progress, percent, items, items_per_sec, eta,
       elapsed >= interval '1 second' AS elapsed_ok, active, failed, errors
  FROM batchflow.dashboard WHERE run = :run;

-- batchflow.progress has the same figures, with the skipped count.
SELECT loop_id, kind, status, total, completed, failed, skipped, active, percent
  FROM batchflow.progress WHERE run_id = :run;

-- Durations of 0.1 s items: p50 >= 100 ms, ordered percentiles.
SELECT loop_id, timed_items, p50_ms >= 100 AS p50_at_least_100ms,
       p50_ms <= p95_ms AND p95_ms <= p99_ms AND p99_ms <= max_ms AS ordered,
       avg_items_per_sec > 0 AS has_throughput
  FROM batchflow.loop_stats WHERE run_id = :run;

-- Progress never goes backwards, even while workers move their counts
-- from shared memory to the tables: 3000 short items at concurrency 4,
-- polled without pause through bf_progress and the batchflow.progress view
-- in turns.
SELECT bf_register('progress_live_quick', $j${"nodes": [
  {"id": "quick", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "things"},
   "children": [{"id": "sleep", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.002)"}]}]}$j$) > 0 AS registered;
CREATE TABLE progress_live_done (n serial, source text, done bigint, total bigint);
CREATE FUNCTION progress_live_poll_fast(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    v record;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        SELECT * INTO p FROM bf_progress(p_run);
        INSERT INTO progress_live_done (source, done, total)
        VALUES ('bf_progress', p.completed + p.failed, p.total);
        SELECT * INTO v FROM batchflow.progress WHERE run_id = p_run;
        INSERT INTO progress_live_done (source, done, total)
        VALUES ('view', v.completed + v.failed, v.total);
        EXIT WHEN p.status <> 'running' OR clock_timestamp() > t0 + interval '60 seconds';
    END LOOP;
END;
$$;
SELECT bf_start('progress_live_quick',
                jsonb_build_object('things', (SELECT jsonb_agg(g) FROM generate_series(1, 3000) g))) AS run \gset
SELECT progress_live_poll_fast(:run);
SELECT source,
       count(*) > 10 AS many_samples,
       count(*) FILTER (WHERE done < prev) AS went_backwards,
       bool_and(done <= total) AS never_above_total,
       max(done) AS last_done
  FROM (SELECT source, done, total, lag(done) OVER (PARTITION BY source ORDER BY n) AS prev
          FROM progress_live_done) s
 GROUP BY source ORDER BY source;
DROP FUNCTION progress_live_poll_fast(bigint);
DROP TABLE progress_live_done;

-- A missing run is refused.
SELECT * FROM bf_progress(-1);

-- Stuck runs: three items at concurrency 1, the last one sleeping 3.5 s.
SELECT bf_register('progress_live_stuck', $j${"nodes": [
  {"id": "slow", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [0.05, 0.05, 3.5]},
   "children": [{"id": "sleep", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(($1)::float8)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('progress_live_stuck') AS run \gset
-- The third item runs far longer than 10 x p95 (50 ms) and more than 1 s:
SET batchflow.stalled_after = '1h';
DO $$
BEGIN
    FOR i IN 1 .. 1000 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM batchflow.stuck_runs
                           WHERE workflow = 'progress_live_stuck');
        PERFORM pg_sleep(0.01);
    END LOOP;
END;
$$;
SELECT loop_id, status, total, done, active, longest_item_idx, reason,
       longest_item_for > interval '1 second' AS over_1s, p95_ms < 1000 AS p95_short
  FROM batchflow.stuck_runs WHERE run_id = :run;
-- ... and, with batchflow.stalled_after = 1 s, no item has ended for 1 s:
SET batchflow.stalled_after = '1s';
SELECT loop_id, reason, idle_for > interval '1 second' AS idle_over_1s
  FROM batchflow.stuck_runs WHERE run_id = :run;
RESET batchflow.stalled_after;
SELECT bf_wait(:run, '1 minute');
SELECT count(*) AS stuck_after_finish FROM batchflow.stuck_runs WHERE run_id = :run;

DROP FUNCTION progress_live_poll(bigint);
DROP TABLE progress_live_sample;
