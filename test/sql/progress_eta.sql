-- ETA accuracy on a steady loop: once 10 % of the items are done, the ETA
-- of bf_progress is within 10 % of the time the loop actually took to
-- finish from that moment.
--
-- "Steady" is made true by construction rather than hoped for: 250 items
-- at concurrency 2, each finishing on a fixed schedule (item i sleeps
-- until t0 + (i + 1) x 20 ms, about 40 ms per item), so that the loop runs
-- at 50 items/s even when other processes compete for the CPU: a late
-- worker catches up instead of slowing the rest of the loop down.  The
-- remaining time is measured, not computed: the loop's finished_at minus
-- the moment of each sample.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

SELECT bf_register('progress_eta_paced', $j${"nodes": [
  {"id": "paced", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "things"},
   "children": [{"id": "wait", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(greatest(0, extract(epoch FROM ($3->'vars'->>'t0')::timestamptz + ($2 + 1) * interval '20 ms' - clock_timestamp())))"}]}]}$j$) > 0 AS registered;

CREATE TABLE progress_eta_sample (at timestamptz, percent numeric, items_per_sec numeric, eta interval);
CREATE FUNCTION progress_eta_poll(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        SELECT * INTO p FROM bf_progress(p_run);
        INSERT INTO progress_eta_sample VALUES (clock_timestamp(), p.percent, p.items_per_sec, p.eta);
        EXIT WHEN p.status <> 'running' OR clock_timestamp() > t0 + interval '60 seconds';
        PERFORM pg_sleep(0.05);
    END LOOP;
END;
$$;

-- The schedule starts 0.3 s after bf_start, so two workers must be there
-- by then.  On a fresh cluster the pool may still be starting (a launcher
-- that started before the database existed is restarted after 5 s); a run
-- started before it measured only the catch-up of items already late.
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN (SELECT count(*) FROM pg_stat_activity
                    WHERE backend_type = 'batchflow worker'
                      AND datname = current_database()) >= 2;
        PERFORM pg_sleep(0.1);
    END LOOP;
END;
$$;
SELECT bf_start('progress_eta_paced',
                jsonb_build_object('t0', clock_timestamp() + interval '0.3 seconds',
                                   'things', (SELECT jsonb_agg(g) FROM generate_series(1, 250) g))) AS run \gset
SELECT progress_eta_poll(:run);
SELECT bf_wait(:run, '1 minute');

-- Relative error of every ETA given between 10 % and 90 % done.  (Past
-- 90 % the remaining time is a few items long, and a relative error of a
-- few milliseconds says nothing about the estimate.)
CREATE TABLE progress_eta_error AS
SELECT s.percent,
       abs(extract(epoch FROM s.eta) / extract(epoch FROM l.finished_at - s.at) - 1) AS error
  FROM progress_eta_sample s, batchflow.loop l
 WHERE l.run_id = :run AND s.percent BETWEEN 10 AND 90 AND s.eta IS NOT NULL;

SELECT (SELECT min(percent) FROM progress_eta_sample WHERE eta IS NOT NULL) <= 15 AS eta_known_by_15pct,
       count(*) >= 20 AS enough_samples,
       bool_and(error <= 0.10) AS every_eta_within_10pct
  FROM progress_eta_error;
-- The recent rate is the schedule's 50 items/s, within 10 %.
SELECT bool_and(items_per_sec BETWEEN 45 AND 55) AS rate_about_50
  FROM progress_eta_sample WHERE percent BETWEEN 10 AND 90;

DROP TABLE progress_eta_error;
DROP FUNCTION progress_eta_poll(bigint);
DROP TABLE progress_eta_sample;
