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
 * What a terminal can show: a first line that says what is listed, then
 * every running and paused run, newest first, then at most the 20 runs
 * that finished last.  Child runs (workflow activities) come right under
 * their parent, their workflow name indented by their depth, and are
 * listed with it: the first line and the 20 count top runs only.  The bar
 * shows items ended (#) and skipped (-); its line ends with the run's
 * status word when the run is not simply running or succeeded (paused,
 * throttled, failed, cancelled), so that a stopped run never looks
 * complete.  Figures cover the loops the run has reached.
 * Meant for psql:  SELECT * FROM batchflow.dashboard \watch 1
 */
CREATE VIEW batchflow.dashboard WITH (security_barrier = true) AS
WITH RECURSIVE vis AS (
    SELECT r.id, r.workflow, r.status, r.started_at, r.finished_at, r.parent_run
      FROM batchflow.runs r
), tree(id, top, path, depth) AS (
    -- Top runs: no parent, or one you may not see.
    SELECT t.id, t.id, ARRAY[t.id], 0
      FROM vis t
     WHERE t.parent_run IS NULL
        OR NOT EXISTS (SELECT 1 FROM vis p WHERE p.id = t.parent_run)
  UNION ALL
    SELECT c.id, tree.top, tree.path || c.id, tree.depth + 1
      FROM tree JOIN vis c ON c.parent_run = tree.id
     WHERE tree.depth < 100
), tops AS (
    SELECT t.id, t.finished_at,
           row_number() OVER (PARTITION BY t.finished_at IS NULL
                              ORDER BY t.finished_at DESC, t.id DESC) AS recent
      FROM vis t JOIN tree ON tree.id = t.id AND tree.depth = 0
), v AS (
    SELECT t.id, t.workflow, t.status, t.started_at, t.finished_at, t.parent_run,
           tree.path, tree.depth, tops.finished_at IS NULL AS top_open, tops.recent
      FROM vis t
      JOIN tree ON tree.id = t.id
      JOIN tops ON tops.id = tree.top
), counts AS (
    SELECT count(*) FILTER (WHERE v.status = 'running') AS running,
           count(*) FILTER (WHERE v.status = 'paused') AS paused,
           count(*) FILTER (WHERE v.finished_at IS NULL AND v.status NOT IN ('running', 'paused')) AS other,
           count(*) FILTER (WHERE v.finished_at IS NOT NULL) AS finished
      FROM v
     WHERE v.depth = 0
), lines AS (
    SELECT 0 AS part, 0::bigint AS sort, '{}'::bigint[] AS path,
           NULL::bigint AS run, NULL::text AS workflow,
           NULL::text AS status, NULL::text AS node,
           format('%s running, %s paused%s; last %s of %s finished',
                  c.running, c.paused,
                  CASE WHEN c.other > 0 THEN format(', %s pending', c.other) ELSE '' END,
                  least(c.finished, 20), c.finished) AS progress,
           NULL::numeric AS percent, NULL::text AS items, NULL::bigint AS skipped,
           NULL::numeric AS items_per_sec, NULL::interval AS eta, NULL::interval AS elapsed,
           NULL::int AS active, NULL::numeric AS failed, NULL::bigint AS errors,
           NULL::bigint AS parent_run
      FROM counts c
    UNION ALL
    SELECT CASE WHEN v.top_open THEN 1 ELSE 2 END,
           v.recent,
           v.path,
           v.id,
           repeat('  ', v.depth) || v.workflow,
           v.status,
           a.node,
           '[' || repeat('#', b.done) || repeat('-', b.skipped) || repeat('.', 20 - b.done - b.skipped) || ']'
               || CASE WHEN v.status IN ('paused', 'failed', 'cancelled') THEN ' ' || v.status
                       WHEN v.status = 'running' AND a.throttled THEN ' throttled'
                       ELSE '' END,
           a.percent,
           a.done || '/' || a.total,
           a.skipped,
           -- A paused run has no rate or ETA to show.
           CASE WHEN v.status <> 'paused' THEN a.items_per_sec END,
           CASE WHEN v.status <> 'paused' THEN date_trunc('second', a.eta) END,
           date_trunc('second', coalesce(v.finished_at, clock_timestamp()) - v.started_at),
           a.active,
           a.failed,
           (SELECT count(*) FROM batchflow.item_error e WHERE e.run_id = v.id),
           v.parent_run
      FROM v
     CROSS JOIN LATERAL (
            SELECT coalesce(sum(p.total), 0) AS total,
                   coalesce(sum(p.completed + p.failed), 0) AS done,
                   coalesce(sum(p.skipped), 0) AS skipped,
                   coalesce(sum(p.failed), 0) AS failed,
                   coalesce(sum(p.active), 0)::int AS active,
                   CASE WHEN coalesce(sum(p.total), 0) = 0 THEN
                             CASE WHEN v.status = 'succeeded' THEN 100.0 ELSE 0.0 END
                        ELSE round(100.0 * sum(p.completed + p.failed) / sum(p.total), 1)
                   END AS percent,
                   sum(p.items_per_sec) FILTER (WHERE p.finished_at IS NULL) AS items_per_sec,
                   max(p.eta) FILTER (WHERE p.finished_at IS NULL) AS eta,
                   coalesce(bool_or(p.status = 'throttled'), false) AS throttled,
                   (array_agg(p.loop_id ORDER BY p.node_index DESC))[1] AS node
              FROM batchflow._progress_all p
             WHERE p.run_id = v.id) a
     CROSS JOIN LATERAL (
            -- Bar cells: items ended (#), then skipped (-), never over 20.
            SELECT least(d, 20) AS done, least(s, 20 - least(d, 20)) AS skipped
              FROM (SELECT CASE WHEN a.total = 0 THEN CASE WHEN v.status = 'succeeded' THEN 20 ELSE 0 END
                                ELSE floor(20.0 * a.done / a.total)::int END AS d,
                           CASE WHEN a.total = 0 THEN 0
                                ELSE ceil(20.0 * a.skipped / a.total)::int END AS s) x) b
     WHERE v.top_open OR v.recent <= 20
)
SELECT run, workflow, status, node, progress, percent, items, skipped, items_per_sec, eta,
       elapsed, active, failed, errors, parent_run
  FROM lines
 ORDER BY part, sort, path;
COMMENT ON VIEW batchflow.dashboard IS 'A first line saying what is shown, then every running and paused run and the 20 runs that finished last, that you may see, each with its child runs right under it, with a progress bar; SELECT * FROM batchflow.dashboard \watch 1';
COMMENT ON COLUMN batchflow.dashboard.run IS 'Run id (empty on the first line, which says what is shown)';
COMMENT ON COLUMN batchflow.dashboard.workflow IS 'Workflow name, indented by two spaces per level for a child run';
COMMENT ON COLUMN batchflow.dashboard.status IS 'Run status';
COMMENT ON COLUMN batchflow.dashboard.node IS 'The node the run is at (or stopped at)';
COMMENT ON COLUMN batchflow.dashboard.progress IS 'Bar over the items of the nodes reached: # ended, - skipped, . still to do; then the status word when the run is paused, throttled, failed or cancelled. On the first line: which runs are shown';
COMMENT ON COLUMN batchflow.dashboard.percent IS 'Items ended (succeeded or failed, not skipped) per 100 items of the nodes reached';
COMMENT ON COLUMN batchflow.dashboard.items IS 'Items ended (succeeded or failed) / items, over the nodes reached';
COMMENT ON COLUMN batchflow.dashboard.skipped IS 'Items skipped (fail-fast or cancel)';
COMMENT ON COLUMN batchflow.dashboard.items_per_sec IS 'Recent rate of the open loops';
COMMENT ON COLUMN batchflow.dashboard.eta IS 'Estimated time to finish the open loops';
COMMENT ON COLUMN batchflow.dashboard.elapsed IS 'Time since the run started, or its duration';
COMMENT ON COLUMN batchflow.dashboard.active IS 'Items executing right now';
COMMENT ON COLUMN batchflow.dashboard.failed IS 'Items failed';
COMMENT ON COLUMN batchflow.dashboard.errors IS 'Failed attempts, retried ones included';
COMMENT ON COLUMN batchflow.dashboard.parent_run IS 'For a child run: the run whose item started it (its line comes right under its parent''s)';
