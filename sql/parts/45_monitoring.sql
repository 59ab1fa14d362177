/*
 * batchflow install script, part 45: monitoring: loop statistics and stuck runs.
 */

-- Monitoring ------------------------------------------------------------------------

/*
 * Per loop: item duration percentiles and throughput.  Durations are those
 * of the final attempt of items that ended (started_at to finished_at), in
 * milliseconds.  Filter by run_id: percentiles read every item of a loop.
 */
CREATE VIEW batchflow.loop_stats WITH (security_barrier = true) AS
SELECT p.run_id, p.loop_id, p.kind, p.status, p.total, p.completed, p.failed,
       d.timed AS timed_items,
       d.p50_ms, d.p95_ms, d.p99_ms, d.max_ms, d.mean_ms,
       p.items_per_sec AS recent_items_per_sec,
       round(((p.completed + p.failed + p.skipped)
              / greatest(extract(epoch FROM p.elapsed), 0.001))::numeric, 1) AS avg_items_per_sec,
       p.elapsed, p.started_at, p.finished_at
  FROM batchflow._progress_all p
 CROSS JOIN LATERAL (
        SELECT count(s.ms) AS timed,
               round(percentile_cont(0.50) WITHIN GROUP (ORDER BY s.ms)::numeric, 1) AS p50_ms,
               round(percentile_cont(0.95) WITHIN GROUP (ORDER BY s.ms)::numeric, 1) AS p95_ms,
               round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s.ms)::numeric, 1) AS p99_ms,
               round(max(s.ms)::numeric, 1) AS max_ms,
               round(avg(s.ms)::numeric, 1) AS mean_ms
          FROM (SELECT extract(epoch FROM i.finished_at - i.started_at) * 1000 AS ms
                  FROM batchflow.item i
                 WHERE i.loop_ref = p.loop_ref
                   AND i.status IN ('succeeded', 'failed')
                   AND i.started_at IS NOT NULL) s) d
 WHERE batchflow.visible(p.owner);
COMMENT ON VIEW batchflow.loop_stats IS 'Per loop of the runs you may see: item duration percentiles (ms) and throughput; filter by run_id';
COMMENT ON COLUMN batchflow.loop_stats.run_id IS 'Run id';
COMMENT ON COLUMN batchflow.loop_stats.loop_id IS 'Node id of the loop or top-level activity';
COMMENT ON COLUMN batchflow.loop_stats.kind IS 'loop, or activity (a top-level activity, run as a one-item loop)';
COMMENT ON COLUMN batchflow.loop_stats.status IS 'running, succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.loop_stats.total IS 'Number of items';
COMMENT ON COLUMN batchflow.loop_stats.completed IS 'Items succeeded';
COMMENT ON COLUMN batchflow.loop_stats.failed IS 'Items failed (after their retries)';
COMMENT ON COLUMN batchflow.loop_stats.timed_items IS 'Items that ended with a start and finish time';
COMMENT ON COLUMN batchflow.loop_stats.p50_ms IS 'Median item duration, ms';
COMMENT ON COLUMN batchflow.loop_stats.p95_ms IS '95th percentile of item duration, ms';
COMMENT ON COLUMN batchflow.loop_stats.p99_ms IS '99th percentile of item duration, ms';
COMMENT ON COLUMN batchflow.loop_stats.max_ms IS 'Longest item duration, ms';
COMMENT ON COLUMN batchflow.loop_stats.mean_ms IS 'Mean item duration, ms';
COMMENT ON COLUMN batchflow.loop_stats.recent_items_per_sec IS 'Items per second over the last 10 seconds (running) or the lifetime (finished)';
COMMENT ON COLUMN batchflow.loop_stats.avg_items_per_sec IS 'Items ended per second since the loop started';
COMMENT ON COLUMN batchflow.loop_stats.elapsed IS 'Time since the loop started, or its duration once finished';
COMMENT ON COLUMN batchflow.loop_stats.started_at IS 'When the run reached this node';
COMMENT ON COLUMN batchflow.loop_stats.finished_at IS 'When the loop closed';

/*
 * Running loops that look stuck or slow:
 *   stalled    no item has ended for batchflow.stalled_after (default 5 min)
 *   slow item  an item has been executing for more than
 *              batchflow.slow_item_factor (default 10) times the loop's p95
 *              item duration, and for more than a second
 * Both settings can be changed per session with SET.
 */
CREATE VIEW batchflow.stuck_runs WITH (security_barrier = true) AS
SELECT s.run_id, s.workflow, s.loop_id, s.status, s.total, s.done, s.active,
       s.last_progress_at, s.idle_for, s.longest_item_idx, s.longest_item_for,
       s.p95_ms,
       CASE WHEN s.idle_for > s.stalled_after THEN 'stalled' ELSE 'slow item' END AS reason
  FROM (SELECT p.run_id, v.workflow, p.loop_id, p.status, p.total,
               p.completed + p.failed + p.skipped AS done, p.active, p.last_progress_at,
               clock_timestamp() - p.last_progress_at AS idle_for,
               ai.idx AS longest_item_idx,
               clock_timestamp() - ai.started_at AS longest_item_for,
               CASE WHEN clock_timestamp() - ai.started_at > interval '1 second' THEN
                    (SELECT round(percentile_cont(0.95) WITHIN GROUP
                                   (ORDER BY extract(epoch FROM i.finished_at - i.started_at) * 1000)::numeric, 1)
                       FROM batchflow.item i
                      WHERE i.loop_ref = p.loop_ref AND i.status = 'succeeded'
                        AND i.started_at IS NOT NULL)
               END AS p95_ms,
               batchflow._setting('batchflow.stalled_after')::interval AS stalled_after,
               batchflow._setting('batchflow.slow_item_factor')::float8 AS slow_factor
          FROM batchflow._progress_all p
          JOIN batchflow.run r ON r.id = p.run_id
          JOIN batchflow.workflow_version v ON v.id = r.version_id
          LEFT JOIN LATERAL (SELECT a.idx, a.started_at FROM batchflow.active_items() a
                              WHERE a.loop_ref = p.loop_ref
                              ORDER BY a.started_at LIMIT 1) ai ON true
         WHERE p.finished_at IS NULL AND r.finished_at IS NULL
           AND batchflow.visible(p.owner)) s
 WHERE s.idle_for > s.stalled_after
    OR (s.p95_ms IS NOT NULL
        AND extract(epoch FROM s.longest_item_for) * 1000 > s.slow_factor * s.p95_ms);
COMMENT ON VIEW batchflow.stuck_runs IS 'Open loops of running runs you may see that are stalled or have an unusually slow item';
COMMENT ON COLUMN batchflow.stuck_runs.run_id IS 'Run id';
COMMENT ON COLUMN batchflow.stuck_runs.workflow IS 'Workflow name';
COMMENT ON COLUMN batchflow.stuck_runs.loop_id IS 'Node id of the open loop or top-level activity';
COMMENT ON COLUMN batchflow.stuck_runs.status IS 'The loop''s status (running, or failed/cancelled while its last items end)';
COMMENT ON COLUMN batchflow.stuck_runs.total IS 'Number of items';
COMMENT ON COLUMN batchflow.stuck_runs.active IS 'Items executing right now';
COMMENT ON COLUMN batchflow.stuck_runs.done IS 'Items ended so far';
COMMENT ON COLUMN batchflow.stuck_runs.last_progress_at IS 'Last time an item ended (as far as is known), or the loop''s start';
COMMENT ON COLUMN batchflow.stuck_runs.idle_for IS 'Time since last_progress_at';
COMMENT ON COLUMN batchflow.stuck_runs.longest_item_idx IS 'Index of the item executing for the longest time';
COMMENT ON COLUMN batchflow.stuck_runs.longest_item_for IS 'How long it has been executing';
COMMENT ON COLUMN batchflow.stuck_runs.p95_ms IS '95th percentile of the loop''s item durations, ms (computed when an item runs over a second)';
COMMENT ON COLUMN batchflow.stuck_runs.reason IS 'stalled, or slow item';

GRANT SELECT ON batchflow.progress, batchflow.dashboard, batchflow.loop_stats,
    batchflow.stuck_runs TO PUBLIC;
