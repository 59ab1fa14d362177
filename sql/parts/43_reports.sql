/*
 * batchflow install script, part 43: what users read: the progress view,
 * bf_progress, bf_report and bf_summary.
 */

-- What users read -----------------------------------------------------------------

CREATE VIEW batchflow.progress WITH (security_barrier = true) AS
SELECT p.run_id, p.loop_id, p.kind, p.node_index, p.status, p.total, p.completed,
       p.failed, p.skipped, p.active, p.percent, p.items_per_sec, p.elapsed, p.eta,
       p.started_at, p.finished_at, p.last_progress_at
  FROM batchflow._progress_all p
 WHERE batchflow.visible(p.owner);
COMMENT ON VIEW batchflow.progress IS 'Progress of every loop and top-level activity of the runs you may see';
COMMENT ON COLUMN batchflow.progress.run_id IS 'Run id';
COMMENT ON COLUMN batchflow.progress.loop_id IS 'Node id of the loop or top-level activity';
COMMENT ON COLUMN batchflow.progress.kind IS 'loop, or activity (a top-level activity, run as a one-item loop)';
COMMENT ON COLUMN batchflow.progress.node_index IS 'Position of the node among the workflow''s top-level nodes';
COMMENT ON COLUMN batchflow.progress.status IS 'running, succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.progress.total IS 'Number of items';
COMMENT ON COLUMN batchflow.progress.completed IS 'Items succeeded';
COMMENT ON COLUMN batchflow.progress.failed IS 'Items failed (after their retries)';
COMMENT ON COLUMN batchflow.progress.skipped IS 'Items skipped (fail-fast or cancel)';
COMMENT ON COLUMN batchflow.progress.active IS 'Items executing right now';
COMMENT ON COLUMN batchflow.progress.percent IS 'Items ended (succeeded, failed or skipped) per 100 items';
COMMENT ON COLUMN batchflow.progress.items_per_sec IS 'Running: items ended per second over the last 10 seconds; finished: over the loop''s lifetime';
COMMENT ON COLUMN batchflow.progress.elapsed IS 'Time since the loop started, or its duration once finished';
COMMENT ON COLUMN batchflow.progress.eta IS 'Estimated time to finish at the recent rate; 0 once finished; NULL while unknown';
COMMENT ON COLUMN batchflow.progress.started_at IS 'When the run reached this node';
COMMENT ON COLUMN batchflow.progress.finished_at IS 'When the loop closed';
COMMENT ON COLUMN batchflow.progress.last_progress_at IS 'Last time an item of the loop ended (as far as is known), or its start';

/*
 * bf_progress(run): one row per loop container of the run, in node order,
 * including the loops the run has not reached yet ('pending', or
 * 'skipped' once the run finished without reaching them).  Top-level
 * activities are not listed; batchflow.progress shows them.
 */
CREATE FUNCTION batchflow._progress(p_run bigint)
    RETURNS TABLE (loop_id text, status text, total bigint, completed bigint, failed bigint,
                   active int, percent numeric, items_per_sec numeric, elapsed interval,
                   eta interval, blocked bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.loop_id, s.status, s.total, s.completed, s.failed, s.active, s.percent,
           s.items_per_sec, s.elapsed, s.eta, s.blocked
      FROM (SELECT p.node_index, p.loop_id,
                   -- A running loop of a paused run (bf_pause) says so; one held
                   -- back by maxItemsPerSecond or maxReplicationLag (part 25) too.
                   CASE WHEN p.status = 'running' AND p.finished_at IS NULL
                             AND EXISTS (SELECT 1 FROM batchflow.run pr
                                          WHERE pr.id = p.run_id AND pr.status = 'paused')
                        THEN 'paused'
                        WHEN p.status = 'running' AND batchflow._loop_throttled(p.loop_ref)
                        THEN 'throttled' ELSE p.status END AS status,
                   p.total, p.completed, p.failed,
                   p.active, p.percent, p.items_per_sec, p.elapsed,
                   -- still materialising: the planner's row estimate stands for the total
                   CASE WHEN f.loop_ref IS NULL OR p.status <> 'running' THEN p.eta
                        WHEN p.items_per_sec > 0
                        THEN make_interval(secs => round((greatest(f.estimate, p.total::float8, 0)
                                                          - p.completed - p.failed - p.skipped)::numeric
                                                         / p.items_per_sec, 3)::float8)
                   END AS eta,
                   -- dependsOn: pending items still waiting for a dependency
                   -- (not ready: part 25).
                   CASE WHEN p.finished_at IS NULL AND l.node ? 'dependsOn'
                        THEN (SELECT count(*) FROM batchflow.item i
                               WHERE i.loop_ref = l.id AND i.status = 'pending' AND i.unmet > 0
                                 -- OFFSET 0: a lookup per item, never an anti-join
                                 -- planned from a small table's statistics.
                                 AND NOT EXISTS (SELECT 1 FROM batchflow.item_ready r
                                                  WHERE r.loop_ref = i.loop_ref AND r.idx = i.idx
                                                 OFFSET 0))
                        ELSE 0 END AS blocked
              FROM batchflow._progress_all p
              JOIN batchflow.loop l ON l.id = p.loop_ref
              LEFT JOIN batchflow.loop_fill f ON f.loop_ref = p.loop_ref
             WHERE p.run_id = p_run AND p.kind = 'loop'
            UNION ALL
            SELECT (n.ord - 1)::int, n.node ->> 'id',
                   CASE WHEN r.finished_at IS NULL THEN 'pending' ELSE 'skipped' END,
                   CASE WHEN jsonb_typeof(n.node -> 'inputSource' -> 'static') = 'array'
                        THEN jsonb_array_length(n.node -> 'inputSource' -> 'static')::bigint END,
                   0::bigint, 0::bigint, 0, 0.0, NULL::numeric, NULL::interval, NULL::interval,
                   0::bigint
              FROM batchflow.run r
              JOIN batchflow.workflow_version v ON v.id = r.version_id
             CROSS JOIN LATERAL jsonb_array_elements(v.definition -> 'nodes') WITH ORDINALITY AS n(node, ord)
             WHERE r.id = p_run
               AND n.node ->> 'type' = 'loop'
               AND NOT EXISTS (SELECT 1 FROM batchflow.loop l
                                WHERE l.run_id = p_run AND l.node_id = n.node ->> 'id')) s
     ORDER BY s.node_index
$$;
COMMENT ON FUNCTION batchflow._progress(bigint) IS 'Internal: the rows of bf_progress, without the ownership check';

-- A jsonb value cut to at most max_bytes of text: the value itself if it fits,
-- otherwise a JSON string holding the longest start of its text that fits,
-- followed by an ellipsis.  The cut is made on characters, never inside one,
-- and the length is found by bisection because escaping (\" \\ \n) and
-- multibyte characters make bytes and characters differ.
CREATE FUNCTION batchflow.truncate_jsonb(value jsonb, max_bytes int DEFAULT 1024) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    t text := value::text;
    lo int := 0;
    hi int;
    mid int;
BEGIN
    IF octet_length(t) <= max_bytes THEN
        RETURN value;
    END IF;
    -- Every character takes at least one byte: no more than max_bytes fit.
    hi := least(length(t), greatest(max_bytes, 0));
    WHILE lo < hi LOOP
        mid := (lo + hi + 1) / 2;
        IF octet_length(to_jsonb(left(t, mid) || '…')::text) <= max_bytes THEN
            lo := mid;
        ELSE
            hi := mid - 1;
        END IF;
    END LOOP;
    RETURN to_jsonb(left(t, lo) || '…');
END;
$$;
COMMENT ON FUNCTION batchflow.truncate_jsonb(jsonb, int) IS 'The value if its text fits in max_bytes, else a JSON string with the longest start of its text that fits, and "…"';

CREATE FUNCTION batchflow._report(p_run bigint)
    RETURNS TABLE (loop_id text, idx int, item jsonb, attempts int, error text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM batchflow.pruned_run WHERE run_id = p_run) THEN
        RAISE NOTICE 'the items of run % were deleted by the history retention', p_run
            USING DETAIL = 'batchflow.history_retention removes the items of finished runs after a while; their counts remain in bf_progress.',
                  HINT = 'Raise batchflow.history_retention (0 keeps items forever) to keep failed items for longer.';
    END IF;
    RETURN QUERY
    SELECT l.node_id, i.idx, batchflow.truncate_jsonb(i.item, 1024), i.attempts, i.error
      FROM batchflow.item i
      JOIN batchflow.loop l ON l.id = i.loop_ref
     WHERE i.run_id = p_run AND i.status = 'failed'
     ORDER BY l.node_index, i.idx;
END;
$$;
COMMENT ON FUNCTION batchflow._report(bigint) IS 'Internal: the rows of bf_report, without the ownership check';

CREATE FUNCTION batchflow._summary(p_run bigint)
    RETURNS TABLE (loop_id text, kind text, status text, total bigint, succeeded bigint,
                   failed bigint, skipped bigint, remaining bigint, failed_attempts bigint,
                   last_error text)
LANGUAGE sql STABLE AS $$
    SELECT p.loop_id, p.kind, p.status, p.total, p.completed, p.failed, p.skipped,
           greatest(p.total - p.completed - p.failed - p.skipped, 0),
           -- Kept by the history retention when it deleted the item errors.
           coalesce(lp.failed_attempts,
                    (SELECT count(*) FROM batchflow.item_error e WHERE e.loop_ref = p.loop_ref)),
           coalesce(lp.last_error,
                    (SELECT e.error FROM batchflow.item_error e WHERE e.loop_ref = p.loop_ref
                      ORDER BY e.id DESC LIMIT 1))
      FROM batchflow._progress_all p
      LEFT JOIN batchflow.loop_progress lp ON lp.loop_ref = p.loop_ref
     WHERE p.run_id = p_run
     ORDER BY p.node_index
$$;
COMMENT ON FUNCTION batchflow._summary(bigint) IS 'Internal: the rows of bf_summary, without the ownership check';

REVOKE ALL ON FUNCTION batchflow._item_counts(bigint), batchflow._progress_json(bigint),
    batchflow._run_json(bigint, text), batchflow._rebuild_counters(boolean),
    batchflow._prune_history(interval, int), batchflow._progress(bigint),
    batchflow._report(bigint), batchflow._summary(bigint) FROM PUBLIC;

CREATE FUNCTION bf_progress(run bigint)
    RETURNS TABLE (loop_id text, status text, total bigint, completed bigint, failed bigint,
                   active int, percent numeric, items_per_sec numeric, elapsed interval,
                   eta interval, blocked bigint)
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_progress';
COMMENT ON FUNCTION bf_progress(bigint) IS 'Progress of each loop of a run: counts, items executing, percent, recent rate, elapsed time, ETA, and items waiting for their dependencies (blocked)';

CREATE FUNCTION bf_report(run bigint)
    RETURNS TABLE (loop_id text, idx int, item jsonb, attempts int, error text)
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_report';
COMMENT ON FUNCTION bf_report(bigint) IS 'One row per failed item of a run: its loop, index, the item (cut to 1 kB), attempts and last error';

CREATE FUNCTION bf_summary(run bigint)
    RETURNS TABLE (loop_id text, kind text, status text, total bigint, succeeded bigint,
                   failed bigint, skipped bigint, remaining bigint, failed_attempts bigint,
                   last_error text)
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_summary';
COMMENT ON FUNCTION bf_summary(bigint) IS 'Success and failure counts of each loop and top-level activity of a run';
