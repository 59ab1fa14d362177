/*
 * batchflow install script, part 40: progress, history, reports, the psql
 * dashboard and monitoring.
 *
 * How a loop's counts are known:
 *   - while it runs, base counts (batchflow.loop_progress) + what each
 *     worker wrote (batchflow.progress_counter, one row per loop and worker
 *     slot, written every batchflow.progress_batch_items items or
 *     batchflow.progress_interval) + what the workers counted but have not
 *     written yet (shared memory, batchflow._progress_live());
 *   - when it closes, exact counts from batchflow.item, stored for good in
 *     batchflow.loop_progress (state 'final');
 *   - when the counters cannot be trusted (after a crash, until the
 *     launcher has rebuilt them; for a loop bf_retry re-opened; with
 *     batchflow.track_progress off; while a failed or cancelled loop waits
 *     for its last items), by counting batchflow.item.
 *
 * Progress is announced with NOTIFY batchflow_progress: by the workers at
 * the batched cadence (at most once per loop per progress interval) while
 * the loop runs, and by the triggers below at every status change of a
 * loop or a run (a failed or cancelled loop with nothing left to run is
 * announced once, when it closes).
 */

-- Counts ----------------------------------------------------------------------

CREATE TYPE batchflow.item_counts AS (completed bigint, failed bigint, skipped bigint);
COMMENT ON TYPE batchflow.item_counts IS 'Items of a loop that succeeded, failed and were skipped';

CREATE TABLE batchflow.loop_progress (
    loop_ref    bigint PRIMARY KEY REFERENCES batchflow.loop (id) ON DELETE CASCADE,
    run_id      bigint NOT NULL,
    state       text NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'recount', 'final')),
    completed   bigint NOT NULL DEFAULT 0 CHECK (completed >= 0),
    failed      bigint NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped     bigint NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE batchflow.loop_progress IS 'Per loop: the base of its progress counts, or its final counts once closed';
COMMENT ON COLUMN batchflow.loop_progress.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.loop_progress.run_id IS 'The run, repeated from the loop';
COMMENT ON COLUMN batchflow.loop_progress.state IS 'live: counts = these + progress_counter + pending; recount: count batchflow.item until the launcher rebuilds; final: these are the exact final counts';
COMMENT ON COLUMN batchflow.loop_progress.completed IS 'Items succeeded (base, or final)';
COMMENT ON COLUMN batchflow.loop_progress.failed IS 'Items failed (base, or final)';
COMMENT ON COLUMN batchflow.loop_progress.skipped IS 'Items skipped (base, or final)';
COMMENT ON COLUMN batchflow.loop_progress.updated_at IS 'When the base or final counts were last set';

CREATE INDEX loop_progress_recount_idx ON batchflow.loop_progress (loop_ref) WHERE state = 'recount';
CREATE INDEX loop_progress_run_idx ON batchflow.loop_progress (run_id);

CREATE TABLE batchflow.progress_counter (
    loop_ref    bigint NOT NULL REFERENCES batchflow.loop_progress (loop_ref) ON DELETE CASCADE,
    slot        int NOT NULL CHECK (slot >= 0),
    completed   bigint NOT NULL CHECK (completed >= 0),
    failed      bigint NOT NULL CHECK (failed >= 0),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (loop_ref, slot)
);
COMMENT ON TABLE batchflow.progress_counter IS 'Items counted by each worker slot, per loop; written in batches, never shared between workers';
COMMENT ON COLUMN batchflow.progress_counter.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.progress_counter.slot IS 'The worker slot that counted these items';
COMMENT ON COLUMN batchflow.progress_counter.completed IS 'Items succeeded, as written so far';
COMMENT ON COLUMN batchflow.progress_counter.failed IS 'Items failed, as written so far';
COMMENT ON COLUMN batchflow.progress_counter.updated_at IS 'When the worker last wrote this row';

CREATE TABLE batchflow.pruned_run (
    run_id       bigint PRIMARY KEY REFERENCES batchflow.run (id) ON DELETE CASCADE,
    finished_at  timestamptz NOT NULL,
    pruned_at    timestamptz,
    items        bigint NOT NULL CHECK (items >= 0)
);
COMMENT ON TABLE batchflow.pruned_run IS 'Runs whose items were deleted by the history retention (batchflow.history_retention)';
COMMENT ON COLUMN batchflow.pruned_run.run_id IS 'The run';
COMMENT ON COLUMN batchflow.pruned_run.finished_at IS 'When the run had finished when it was pruned';
COMMENT ON COLUMN batchflow.pruned_run.pruned_at IS 'When its last items were deleted; NULL while the launcher is still deleting them';
COMMENT ON COLUMN batchflow.pruned_run.items IS 'How many items and item errors were deleted so far';

CREATE INDEX pruned_run_finished_idx ON batchflow.pruned_run (finished_at);

-- bf_report and the "failed items" history query read only failed items.
CREATE INDEX item_failed_idx ON batchflow.item (run_id, loop_ref, idx) WHERE status = 'failed';

-- Shared memory -------------------------------------------------------------

CREATE FUNCTION batchflow._progress_live(
    OUT loop_ref bigint, OUT pending_completed bigint, OUT pending_failed bigint,
    OUT active int, OUT items_per_sec float8, OUT last_commit_at timestamptz)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_progress_live';
COMMENT ON FUNCTION batchflow._progress_live() IS 'Internal: per loop, counts not yet written, items executing, recent rate and last commit, from shared memory';

CREATE FUNCTION batchflow._progress_exact() RETURNS boolean
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_progress_exact';
COMMENT ON FUNCTION batchflow._progress_exact() IS 'Internal: true while progress must be counted from batchflow.item (counters being rebuilt, or tracking off)';

-- Exact counts of a loop's items, from batchflow.item.
CREATE FUNCTION batchflow._item_counts(p_loop bigint) RETURNS batchflow.item_counts
LANGUAGE sql STABLE AS $$
    SELECT ROW(count(*) FILTER (WHERE status = 'succeeded'),
               count(*) FILTER (WHERE status = 'failed'),
               count(*) FILTER (WHERE status = 'skipped'))::batchflow.item_counts
      FROM batchflow.item WHERE loop_ref = p_loop
$$;
COMMENT ON FUNCTION batchflow._item_counts(bigint) IS 'Internal: exact counts of a loop''s items by final status';

-- The computation ---------------------------------------------------------------

/*
 * One row per loop row (loop containers and top-level activities) of every
 * run, no visibility filter: the user views below add it.
 */
CREATE VIEW batchflow._progress_all AS
SELECT l.run_id,
       l.id AS loop_ref,
       l.node_id AS loop_id,
       l.kind,
       l.node_index,
       l.status,
       l.total::bigint AS total,
       k.completed,
       k.failed,
       k.skipped,
       coalesce(x.active, 0) AS active,
       CASE WHEN l.total = 0 THEN 100.0
            ELSE round(100.0 * least(k.done, l.total) / l.total, 1) END AS percent,
       CASE WHEN l.finished_at IS NOT NULL
                 THEN round((k.done / greatest(extract(epoch FROM l.finished_at - l.started_at), 0.001))::numeric, 1)
            WHEN x.items_per_sec IS NOT NULL
                 THEN round(x.items_per_sec::numeric, 1)
            WHEN k.done > 0
                 THEN round((k.done / greatest(extract(epoch FROM clock_timestamp() - l.started_at), 0.001))::numeric, 1)
       END AS items_per_sec,
       coalesce(l.finished_at, clock_timestamp()) - l.started_at AS elapsed,
       CASE WHEN l.finished_at IS NOT NULL THEN interval '0'
            WHEN l.status <> 'running' THEN NULL
            WHEN k.done >= l.total THEN interval '0'
            WHEN x.items_per_sec > 0
                 THEN make_interval(secs => round(((l.total - k.done) / x.items_per_sec)::numeric, 3)::float8)
       END AS eta,
       l.started_at,
       l.finished_at,
       greatest(x.last_commit_at, k.written_at, l.started_at) AS last_progress_at,
       k.exact,
       r.owner
  FROM batchflow.loop l
  JOIN batchflow.run r ON r.id = l.run_id
  LEFT JOIN batchflow.loop_progress p ON p.loop_ref = l.id
  LEFT JOIN batchflow._progress_live() x ON x.loop_ref = l.id
  CROSS JOIN LATERAL (
        SELECT c.exact, c.written_at,
               (c.counts).completed, (c.counts).failed, (c.counts).skipped,
               (c.counts).completed + (c.counts).failed + (c.counts).skipped AS done
          FROM (SELECT w.written_at,
                       e.exact,
                       CASE WHEN e.exact THEN
                                 (SELECT ROW(count(*) FILTER (WHERE i.status = 'succeeded'),
                                             count(*) FILTER (WHERE i.status = 'failed'),
                                             count(*) FILTER (WHERE i.status = 'skipped'))::batchflow.item_counts
                                    FROM batchflow.item i WHERE i.loop_ref = l.id)
                            WHEN p.state = 'final' THEN ROW(p.completed, p.failed, p.skipped)::batchflow.item_counts
                            ELSE ROW(p.completed + w.completed + coalesce(x.pending_completed, 0),
                                     p.failed + w.failed + coalesce(x.pending_failed, 0),
                                     p.skipped)::batchflow.item_counts
                       END AS counts
                  FROM (SELECT coalesce(sum(pc.completed), 0)::bigint AS completed,
                               coalesce(sum(pc.failed), 0)::bigint AS failed,
                               max(pc.updated_at) AS written_at
                          FROM batchflow.progress_counter pc
                         WHERE pc.loop_ref = l.id) w,
                       LATERAL (SELECT CASE WHEN p.state = 'final' AND l.finished_at IS NOT NULL THEN false
                                            WHEN p.state IS DISTINCT FROM 'live' THEN true
                                            WHEN l.status <> 'running' THEN true
                                            ELSE batchflow._progress_exact() END AS exact) e
                OFFSET 0) c
  ) k;
COMMENT ON VIEW batchflow._progress_all IS 'Internal: progress of every loop of every run, without the visibility filter';
COMMENT ON COLUMN batchflow._progress_all.run_id IS 'Run id';
COMMENT ON COLUMN batchflow._progress_all.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow._progress_all.loop_id IS 'Node id of the loop or top-level activity';
COMMENT ON COLUMN batchflow._progress_all.kind IS 'loop, or activity (a top-level activity, run as a one-item loop)';
COMMENT ON COLUMN batchflow._progress_all.node_index IS 'Position of the node among the workflow''s top-level nodes';
COMMENT ON COLUMN batchflow._progress_all.status IS 'running, succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow._progress_all.total IS 'Number of items';
COMMENT ON COLUMN batchflow._progress_all.completed IS 'Items succeeded';
COMMENT ON COLUMN batchflow._progress_all.failed IS 'Items failed (after their retries)';
COMMENT ON COLUMN batchflow._progress_all.skipped IS 'Items skipped (fail-fast or cancel)';
COMMENT ON COLUMN batchflow._progress_all.active IS 'Items executing right now';
COMMENT ON COLUMN batchflow._progress_all.percent IS 'Items ended (succeeded, failed or skipped) per 100 items';
COMMENT ON COLUMN batchflow._progress_all.items_per_sec IS 'Running: items ended per second over the last 10 seconds; finished: over the loop''s lifetime';
COMMENT ON COLUMN batchflow._progress_all.elapsed IS 'Time since the loop started, or its duration once finished';
COMMENT ON COLUMN batchflow._progress_all.eta IS 'Estimated time to finish at the recent rate; 0 once finished; NULL while unknown';
COMMENT ON COLUMN batchflow._progress_all.started_at IS 'When the run reached this node';
COMMENT ON COLUMN batchflow._progress_all.finished_at IS 'When the loop closed';
COMMENT ON COLUMN batchflow._progress_all.last_progress_at IS 'Last time an item of the loop ended (as far as is known), or its start';
COMMENT ON COLUMN batchflow._progress_all.exact IS 'True when the counts were taken from batchflow.item rather than from the batched counters';
COMMENT ON COLUMN batchflow._progress_all.owner IS 'OID of the role that started the run; the user views filter on it';

-- Status changes -----------------------------------------------------------------

-- The payload announced for a loop: run, loop, status and counts.
CREATE FUNCTION batchflow._progress_json(p_loop bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT json_build_object('run', p.run_id, 'loop', p.loop_id, 'kind', p.kind,
                             'status', p.status, 'total', p.total,
                             'completed', p.completed, 'failed', p.failed,
                             'skipped', p.skipped, 'percent', p.percent,
                             'active', p.active)::text
      FROM batchflow._progress_all p
     WHERE p.loop_ref = p_loop
$$;
COMMENT ON FUNCTION batchflow._progress_json(bigint) IS 'Internal: the NOTIFY batchflow_progress payload of a loop';

-- The payload announced for a run: its status and the sum over its loops.
CREATE FUNCTION batchflow._run_json(p_run bigint, p_status text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT json_build_object('run', p_run, 'loop', NULL, 'kind', 'run',
                             'status', p_status,
                             'total', coalesce(sum(p.total), 0),
                             'completed', coalesce(sum(p.completed), 0),
                             'failed', coalesce(sum(p.failed), 0),
                             'skipped', coalesce(sum(p.skipped), 0))::text
      FROM batchflow._progress_all p
     WHERE p.run_id = p_run
$$;
COMMENT ON FUNCTION batchflow._run_json(bigint, text) IS 'Internal: the NOTIFY batchflow_progress payload of a run';

-- A loop was created: start its progress (final at once if it has no item).
CREATE FUNCTION batchflow._loop_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batchflow.loop_progress (loop_ref, run_id, state)
    VALUES (NEW.id, NEW.run_id, CASE WHEN NEW.finished_at IS NULL THEN 'live' ELSE 'final' END);
    PERFORM pg_notify('batchflow_progress', batchflow._progress_json(NEW.id));
    RETURN NULL;
END;
$$;

-- A loop changed status, closed or was re-opened.
CREATE FUNCTION batchflow._loop_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c batchflow.item_counts;
BEGIN
    IF OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL THEN
        -- Closed: its items will not change any more; keep their exact counts.
        c := batchflow._item_counts(NEW.id);
        UPDATE batchflow.loop_progress
           SET state = 'final', completed = c.completed, failed = c.failed,
               skipped = c.skipped, updated_at = clock_timestamp()
         WHERE loop_ref = NEW.id;
    ELSIF OLD.finished_at IS NOT NULL AND NEW.finished_at IS NULL THEN
        -- Re-opened by bf_retry: count items until the launcher rebuilds.
        UPDATE batchflow.loop_progress
           SET state = 'recount', updated_at = clock_timestamp()
         WHERE loop_ref = NEW.id;
    ELSIF NEW.finished_at IS NULL AND NEW.status <> 'running'
          AND NOT EXISTS (SELECT 1 FROM batchflow.item i
                           WHERE i.loop_ref = NEW.id AND i.status IN ('pending', 'running')) THEN
        /*
         * Failed or cancelled with no item left to run or wait for: the
         * next worker (or the launcher) closes it at once, with these very
         * counts, and announces that.  Announcing both would send the same
         * payload twice.
         */
        RETURN NULL;
    END IF;
    PERFORM pg_notify('batchflow_progress', batchflow._progress_json(NEW.id));
    RETURN NULL;
END;
$$;

-- A run started or changed status.
CREATE FUNCTION batchflow._run_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('batchflow_progress', batchflow._run_json(NEW.id, NEW.status));
    RETURN NULL;
END;
$$;

CREATE TRIGGER loop_progress_created AFTER INSERT ON batchflow.loop
    FOR EACH ROW EXECUTE FUNCTION batchflow._loop_created();
CREATE TRIGGER loop_progress_changed AFTER UPDATE ON batchflow.loop
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.finished_at IS DISTINCT FROM NEW.finished_at)
    EXECUTE FUNCTION batchflow._loop_changed();
CREATE TRIGGER run_progress_created AFTER INSERT ON batchflow.run
    FOR EACH ROW EXECUTE FUNCTION batchflow._run_changed();
CREATE TRIGGER run_progress_changed AFTER UPDATE ON batchflow.run
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION batchflow._run_changed();

-- The launcher's work ----------------------------------------------------------

/*
 * Rebuild progress counters from batchflow.item: of every open loop (all)
 * or of the loops marked 'recount'.  Called by the launcher while it holds
 * the reconcile lock; returns the loops rebuilt.
 */
CREATE FUNCTION batchflow._rebuild_counters(p_all boolean) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_loops bigint[];
BEGIN
    SELECT coalesce(array_agg(p.loop_ref), '{}') INTO v_loops
      FROM batchflow.loop_progress p
      JOIN batchflow.loop l ON l.id = p.loop_ref
     WHERE CASE WHEN p_all THEN l.finished_at IS NULL AND p.state <> 'final'
                ELSE p.state = 'recount' END;

    DELETE FROM batchflow.progress_counter WHERE loop_ref = ANY (v_loops);
    UPDATE batchflow.loop_progress p
       SET state = CASE WHEN l.finished_at IS NULL THEN 'live' ELSE 'final' END,
           completed = (c.counts).completed, failed = (c.counts).failed,
           skipped = (c.counts).skipped, updated_at = clock_timestamp()
      FROM batchflow.loop l,
           LATERAL (SELECT batchflow._item_counts(l.id) AS counts OFFSET 0) c
     WHERE p.loop_ref = ANY (v_loops) AND l.id = p.loop_ref;
    RETURN QUERY SELECT unnest(v_loops);
END;
$$;
COMMENT ON FUNCTION batchflow._rebuild_counters(boolean) IS 'Internal: reset progress counters to the exact counts from batchflow.item';

/*
 * Delete a batch of the items (item errors first) of the run that finished
 * longest ago, if that is more than p_retention ago; record the run in
 * pruned_run once it has no item left.  Returns the number of rows deleted
 * (0: nothing to prune now).
 *
 * Runs are pruned strictly in finished_at order, so that only the runs
 * finished after the last one pruned need looking at (less an hour, for a
 * run whose finishing transaction committed late).  When the oldest
 * candidate is locked (bf_retry is re-opening it), nothing is pruned until
 * the next sweep rather than skipping past it for good.
 */
CREATE FUNCTION batchflow._prune_history(p_retention interval, p_batch int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_run      bigint;
    v_finished timestamptz;
    v_errors   int;
    v_items    int;
BEGIN
    SELECT r.id, r.finished_at INTO v_run, v_finished
      FROM batchflow.run r
     WHERE r.finished_at < clock_timestamp() - p_retention
       AND r.finished_at >= coalesce((SELECT p.finished_at FROM batchflow.pruned_run p
                                       WHERE p.pruned_at IS NOT NULL
                                       ORDER BY p.finished_at DESC LIMIT 1),
                                     '-infinity') - interval '1 hour'
       AND NOT EXISTS (SELECT 1 FROM batchflow.pruned_run p
                        WHERE p.run_id = r.id AND p.pruned_at IS NOT NULL)
     ORDER BY r.finished_at
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Keep bf_retry out while pruning; if it holds the run, try again later.
    PERFORM 1 FROM batchflow.run r
      WHERE r.id = v_run AND r.finished_at IS NOT NULL
        FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;

    DELETE FROM batchflow.item_error
     WHERE id IN (SELECT id FROM batchflow.item_error WHERE run_id = v_run LIMIT p_batch);
    GET DIAGNOSTICS v_errors = ROW_COUNT;

    DELETE FROM batchflow.item i
     USING (SELECT loop_ref, idx FROM batchflow.item
             WHERE run_id = v_run LIMIT greatest(p_batch - v_errors, 0)) s
     WHERE i.loop_ref = s.loop_ref AND i.idx = s.idx;
    GET DIAGNOSTICS v_items = ROW_COUNT;

    IF v_errors + v_items < p_batch THEN
        -- Nothing left: the run's history is pruned.
        DELETE FROM batchflow.progress_counter c
         USING batchflow.loop l WHERE l.run_id = v_run AND c.loop_ref = l.id;
        INSERT INTO batchflow.pruned_run (run_id, finished_at, items, pruned_at)
        VALUES (v_run, v_finished, v_errors + v_items, clock_timestamp())
        ON CONFLICT (run_id) DO UPDATE
            SET items = batchflow.pruned_run.items + excluded.items,
                finished_at = excluded.finished_at, pruned_at = excluded.pruned_at;
        RETURN v_errors + v_items + 1;
    END IF;
    -- More to come: count what went so far.
    INSERT INTO batchflow.pruned_run (run_id, finished_at, items)
    VALUES (v_run, v_finished, v_errors + v_items)
    ON CONFLICT (run_id) DO UPDATE SET items = batchflow.pruned_run.items + excluded.items;
    RETURN v_errors + v_items;
END;
$$;
COMMENT ON FUNCTION batchflow._prune_history(interval, int) IS 'Internal: delete a batch of the items of the oldest finished run past the retention';

-- What users read -----------------------------------------------------------------

CREATE VIEW batchflow.progress AS
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
                   eta interval)
LANGUAGE sql STABLE AS $$
    SELECT s.loop_id, s.status, s.total, s.completed, s.failed, s.active, s.percent,
           s.items_per_sec, s.elapsed, s.eta
      FROM (SELECT p.node_index, p.loop_id, p.status, p.total, p.completed, p.failed,
                   p.active, p.percent, p.items_per_sec, p.elapsed, p.eta
              FROM batchflow._progress_all p
             WHERE p.run_id = p_run AND p.kind = 'loop'
            UNION ALL
            SELECT (n.ord - 1)::int, n.node ->> 'id',
                   CASE WHEN r.finished_at IS NULL THEN 'pending' ELSE 'skipped' END,
                   CASE WHEN jsonb_typeof(n.node -> 'inputSource' -> 'static') = 'array'
                        THEN jsonb_array_length(n.node -> 'inputSource' -> 'static')::bigint END,
                   0::bigint, 0::bigint, 0, 0.0, NULL::numeric, NULL::interval, NULL::interval
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
LANGUAGE plpgsql STABLE AS $$
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
           (SELECT count(*) FROM batchflow.item_error e WHERE e.loop_ref = p.loop_ref),
           (SELECT e.error FROM batchflow.item_error e WHERE e.loop_ref = p.loop_ref
             ORDER BY e.id DESC LIMIT 1)
      FROM batchflow._progress_all p
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
                   eta interval)
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_progress';
COMMENT ON FUNCTION bf_progress(bigint) IS 'Progress of each loop of a run: counts, items executing, percent, recent rate, elapsed time and ETA';

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
CREATE VIEW batchflow.dashboard AS
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

-- Monitoring ------------------------------------------------------------------------

/*
 * Per loop: item duration percentiles and throughput.  Durations are those
 * of the final attempt of items that ended (started_at to finished_at), in
 * milliseconds.  Filter by run_id: percentiles read every item of a loop.
 */
CREATE VIEW batchflow.loop_stats AS
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
CREATE VIEW batchflow.stuck_runs AS
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
               coalesce(nullif(current_setting('batchflow.stalled_after', true), '')::interval,
                        interval '5 minutes') AS stalled_after,
               coalesce(nullif(current_setting('batchflow.slow_item_factor', true), '')::float8,
                        10) AS slow_factor
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
