/*
 * batchflow install script, part 41: the progress of every loop (one view
 * for every reader) and the NOTIFY batchflow_progress payloads announced
 * at status changes (through batchflow._announce: sent after the commit).
 */

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
       -- A loop of workflow activities: its children in flight (items
       -- 'running' with a child run, holding no worker; part 26).
       CASE WHEN l.finished_at IS NOT NULL THEN 0
            WHEN coalesce(l.node ->> 'activity' = 'workflow'
                          OR l.node #>> '{children,0,activity}' = 'workflow', false)
                 THEN (SELECT count(*) FROM batchflow.item i
                        WHERE i.loop_ref = l.id AND i.status = 'running'
                          AND i.child_run IS NOT NULL)::int
            ELSE coalesce(x.active, 0) END AS active,
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
COMMENT ON COLUMN batchflow._progress_all.active IS 'Items executing right now; for a loop of workflow activities, its child runs in flight';
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

-- Announce a payload on NOTIFY batchflow_progress once this transaction
-- has committed, sent by the database's announcer (src/announce.c) so
-- that the transaction itself does not take PostgreSQL's notify lock.
CREATE FUNCTION batchflow._announce(payload text) RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_announce';
COMMENT ON FUNCTION batchflow._announce(text) IS 'Internal: NOTIFY batchflow_progress with this payload after the commit, in commit order, sent by the database''s announcer';
REVOKE ALL ON FUNCTION batchflow._announce(text) FROM PUBLIC;

-- The payload announced for a loop: run, loop, status and counts.
-- PL/pgSQL, not SQL: its plan of _progress_all is kept for the session
-- (a SQL function planned that view again on every call; the workers
-- call it for every loop they close).
CREATE FUNCTION batchflow._progress_json(p_loop bigint) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT json_build_object('run', p.run_id, 'loop', p.loop_id, 'kind', p.kind,
                                     'status', p.status, 'total', p.total,
                                     'completed', p.completed, 'failed', p.failed,
                                     'skipped', p.skipped, 'percent', p.percent,
                                     'active', p.active)::text
              FROM batchflow._progress_all p
             WHERE p.loop_ref = p_loop);
END;
$$;
COMMENT ON FUNCTION batchflow._progress_json(bigint) IS 'Internal: the NOTIFY batchflow_progress payload of a loop';

-- The payload announced for a run: its status and the sum over its loops
-- (PL/pgSQL for the kept plan, as _progress_json).
CREATE FUNCTION batchflow._run_json(p_run bigint, p_status text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT json_build_object('run', p_run, 'loop', NULL, 'kind', 'run',
                                     'status', p_status,
                                     'total', coalesce(sum(p.total), 0),
                                     'completed', coalesce(sum(p.completed), 0),
                                     'failed', coalesce(sum(p.failed), 0),
                                     'skipped', coalesce(sum(p.skipped), 0))::text
              FROM batchflow._progress_all p
             WHERE p.run_id = p_run);
END;
$$;
COMMENT ON FUNCTION batchflow._run_json(bigint, text) IS 'Internal: the NOTIFY batchflow_progress payload of a run';

-- A loop was created: start its progress (final at once if it has no item).
CREATE FUNCTION batchflow._loop_created() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A restore loads the loop's progress row itself (70_backup.sql).
    IF batchflow._restoring('batchflow.loop') THEN
        RETURN NULL;
    END IF;
    INSERT INTO batchflow.loop_progress (loop_ref, run_id, state)
    VALUES (NEW.id, NEW.run_id, CASE WHEN NEW.finished_at IS NULL THEN 'live' ELSE 'final' END);
    /*
     * _progress_json(NEW.id), written out: a loop being created has no
     * item yet (they are inserted after it), so nothing has ended or is
     * executing.  Planning _progress_json's view was half of bf_start.
     */
    PERFORM batchflow._announce(
                      json_build_object('run', NEW.run_id, 'loop', NEW.node_id, 'kind', NEW.kind,
                                        'status', NEW.status, 'total', NEW.total::bigint,
                                        'completed', 0, 'failed', 0, 'skipped', 0,
                                        'percent', CASE WHEN NEW.total = 0 THEN 100.0 ELSE 0.0 END,
                                        'active', 0)::text);
    RETURN NULL;
END;
$$;

-- A loop changed status, closed or was re-opened.
CREATE FUNCTION batchflow._loop_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
    PERFORM batchflow._announce(batchflow._progress_json(NEW.id));
    RETURN NULL;
END;
$$;

-- A run started or changed status.
CREATE FUNCTION batchflow._run_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- _run_json(NEW.id, NEW.status), written out: a new run has no loop yet.
        PERFORM batchflow._announce(
                          json_build_object('run', NEW.id, 'loop', NULL, 'kind', 'run',
                                            'status', NEW.status, 'total', 0,
                                            'completed', 0, 'failed', 0, 'skipped', 0)::text);
    ELSE
        PERFORM batchflow._announce(batchflow._run_json(NEW.id, NEW.status));
    END IF;
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
