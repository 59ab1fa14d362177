/*
 * batchflow install script, part 44: the psql dashboard.
 */

-- The psql dashboard ------------------------------------------------------------

-- A text progress bar: [#########...........] for percent in 0..100.
CREATE FUNCTION batchflow.progress_bar(percent numeric, width int DEFAULT 20) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT '[' || repeat('#', f) || repeat('.', width - f) || ']'
      FROM (SELECT least(greatest(floor(coalesce(percent, 0) * width / 100)::int, 0), width) AS f) s
$$;
COMMENT ON FUNCTION batchflow.progress_bar(numeric, int) IS 'A text progress bar of the given width';

/*
 * One line per run that is running or finished in the last 10 minutes,
 * running ones first.  Figures cover the loops the run has reached.
 * Meant for psql:  SELECT * FROM batchflow.dashboard \watch 1
 */
CREATE VIEW batchflow.dashboard WITH (security_barrier = true) AS
SELECT r.id AS run,
       r.workflow,
       r.status,
       a.node,
       batchflow.progress_bar(a.percent) AS progress,
       a.percent,
       a.done || '/' || a.total AS items,
       a.items_per_sec,
       date_trunc('second', a.eta) AS eta,
       date_trunc('second', coalesce(r.finished_at, clock_timestamp()) - r.started_at) AS elapsed,
       a.active,
       a.failed,
       (SELECT count(*) FROM batchflow.item_error e WHERE e.run_id = r.id) AS errors
  FROM batchflow.runs r
 CROSS JOIN LATERAL (
        SELECT coalesce(sum(p.total), 0) AS total,
               coalesce(sum(p.completed + p.failed + p.skipped), 0) AS done,
               coalesce(sum(p.failed), 0) AS failed,
               coalesce(sum(p.active), 0)::int AS active,
               CASE WHEN coalesce(sum(p.total), 0) = 0 THEN
                         CASE WHEN r.finished_at IS NULL THEN 0.0 ELSE 100.0 END
                    ELSE round(100.0 * sum(p.completed + p.failed + p.skipped) / sum(p.total), 1)
               END AS percent,
               sum(p.items_per_sec) FILTER (WHERE p.finished_at IS NULL) AS items_per_sec,
               max(p.eta) FILTER (WHERE p.finished_at IS NULL) AS eta,
               (array_agg(p.loop_id ORDER BY p.node_index DESC))[1] AS node
          FROM batchflow._progress_all p
         WHERE p.run_id = r.id) a
 WHERE r.finished_at IS NULL OR r.finished_at > clock_timestamp() - interval '10 minutes'
 ORDER BY r.finished_at IS NULL DESC, r.id DESC;
COMMENT ON VIEW batchflow.dashboard IS 'One line per running or recently finished run you may see, with a progress bar; SELECT * FROM batchflow.dashboard \watch 1';
COMMENT ON COLUMN batchflow.dashboard.run IS 'Run id';
COMMENT ON COLUMN batchflow.dashboard.workflow IS 'Workflow name';
COMMENT ON COLUMN batchflow.dashboard.status IS 'Run status';
COMMENT ON COLUMN batchflow.dashboard.node IS 'The node the run is at (or stopped at)';
COMMENT ON COLUMN batchflow.dashboard.progress IS 'Progress bar over the items of the nodes reached';
COMMENT ON COLUMN batchflow.dashboard.percent IS 'Items ended per 100 items of the nodes reached';
COMMENT ON COLUMN batchflow.dashboard.items IS 'Items ended / items, over the nodes reached';
COMMENT ON COLUMN batchflow.dashboard.items_per_sec IS 'Recent rate of the open loops';
COMMENT ON COLUMN batchflow.dashboard.eta IS 'Estimated time to finish the open loops';
COMMENT ON COLUMN batchflow.dashboard.elapsed IS 'Time since the run started, or its duration';
COMMENT ON COLUMN batchflow.dashboard.active IS 'Items executing right now';
COMMENT ON COLUMN batchflow.dashboard.failed IS 'Items failed';
COMMENT ON COLUMN batchflow.dashboard.errors IS 'Failed attempts, retried ones included';
