-- Rates against a known pace.  30 items at cap 1, each finishing on a
-- fixed schedule (item i sleeps until t0 + (i + 1) x 200 ms): the loop runs
-- at 5 items/s whatever else the machine does (a late item is followed by
-- a shorter one).  Every rate the views give must be that pace, within
-- 10 %:
--   * bf_progress' recent items_per_sec, in every sample taken from the
--     third item on while the loop runs (at 5 items/s a sample may come up
--     to 200 ms after the last commit: a rate that counted that wait would
--     be up to a third low in the first seconds; before the third item the
--     window holds the worker's first, slower claims);
--   * batchflow.loop_stats' avg_items_per_sec from half-way on (it counts
--     the time since the last commit too: k items in up to (k + 1) x 200
--     ms, 6 % low at k = 15, more before);
--   * once finished: bf_progress' items_per_sec and loop_stats'
--     recent_items_per_sec and avg_items_per_sec, over the loop's lifetime
--     (30 items in 6 s).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

SELECT bf_register('progress_rate_paced', $j${"nodes": [
  {"id": "paced", "type": "loop", "loopType": "parallel", "concurrency": 1,
   "inputSource": {"variable": "things"},
   "children": [{"id": "wait", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(greatest(0, extract(epoch FROM ($3->'vars'->>'t0')::timestamptz + ($2 + 1) * interval '200 ms' - clock_timestamp())))"}]}]}$j$) > 0 AS registered;

CREATE TABLE progress_rate_sample (at timestamptz, percent numeric, items_per_sec numeric,
                                   avg_items_per_sec numeric);
CREATE FUNCTION progress_rate_poll(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        SELECT b.status, b.percent, b.items_per_sec, s.avg_items_per_sec INTO p
          FROM bf_progress(p_run) b, batchflow.loop_stats s
         WHERE s.run_id = p_run;
        EXIT WHEN p.status <> 'running' OR clock_timestamp() > t0 + interval '60 seconds';
        INSERT INTO progress_rate_sample VALUES (clock_timestamp(), p.percent, p.items_per_sec, p.avg_items_per_sec);
        PERFORM pg_sleep(0.05);
    END LOOP;
END;
$$;

-- The schedule starts at bf_start (the first item ends 200 ms later): a
-- worker must be there by then.
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN (SELECT count(*) FROM pg_stat_activity
                    WHERE backend_type = 'batchflow worker'
                      AND datname = current_database()) >= 1;
        PERFORM pg_sleep(0.1);
    END LOOP;
END;
$$;
SELECT bf_start('progress_rate_paced',
                jsonb_build_object('t0', clock_timestamp(),
                                   'things', (SELECT jsonb_agg(g) FROM generate_series(1, 30) g))) AS run \gset
SELECT progress_rate_poll(:run);
SELECT bf_wait(:run, '1 minute');

-- While running: every recent rate, and the average from half-way on.
SELECT count(*) FILTER (WHERE items_per_sec IS NOT NULL) >= 50 AS enough_rate_samples,
       bool_and(items_per_sec BETWEEN 4.5 AND 5.5) AS every_recent_rate_within_10pct,
       bool_and(avg_items_per_sec BETWEEN 4.5 AND 5.5) FILTER (WHERE percent >= 50) AS average_within_10pct
  FROM progress_rate_sample WHERE items_per_sec IS NOT NULL AND percent >= 10 AND percent < 100;
-- Finished: the rate over the loop's lifetime, in every view.
SELECT b.items_per_sec BETWEEN 4.5 AND 5.5 AS finished_rate_within_10pct,
       s.recent_items_per_sec BETWEEN 4.5 AND 5.5 AS finished_recent_within_10pct,
       s.avg_items_per_sec BETWEEN 4.5 AND 5.5 AS finished_average_within_10pct
  FROM bf_progress(:run) b, batchflow.loop_stats s
 WHERE s.run_id = :run;

DROP FUNCTION progress_rate_poll(bigint);
DROP TABLE progress_rate_sample;
