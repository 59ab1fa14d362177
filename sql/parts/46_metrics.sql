/*
 * batchflow install script, part 45: metrics for Prometheus, with bounded
 * labels.
 *
 * The cardinality rule: every metric is labelled by workflow and loop (node
 * id), by status, by worker slot or by histogram bucket: sets that grow
 * with the workflows registered, never with the runs.  Only
 * batchflow.metric_running_loops() has a run_id, for the runs executing now
 * and at most as many as its argument.
 *
 * Counters that only grow, per workflow and loop: items ended (by status),
 * failed attempts that were retried, and the item duration histogram
 * (fixed buckets, so that Prometheus computes any quantile over any
 * window).  They must survive history pruning, bf_purge and restarts, so
 * they live in tables:
 *   - batchflow.metric_counter holds, per workflow and loop id, everything
 *     counted from loops that have closed;
 *   - batchflow.metric_loop remembers, per loop, what of it has been added
 *     there ("counted"), and for an open loop the counts of its "prefix":
 *     the items below the lowest index still pending or executing, which
 *     have all ended and will not change;
 *   - when a loop closes (or bf_retry re-opens it) its counts are taken
 *     from its items, in that very transaction, and what they add to
 *     "counted" is added to batchflow.metric_counter (trigger
 *     loop_metrics_changed);
 *   - an open loop adds its item counts as the progress views know them
 *     (exact, from the batched progress counters), its retried attempts
 *     (batchflow.item_error) and the durations of its prefix, less what it
 *     added before.  Each read of batchflow.metric_items() first moves the
 *     prefixes up, reading only the items that ended since the last read
 *     (at most 100,000 per loop and read).
 * So the closing transaction moves a loop's counts from "open" to "closed"
 * atomically; pruning (which deletes the items of closed loops only) and
 * deleting runs change nothing; and a re-opened loop counts its new
 * attempts on top of the old ones.  The histogram of an open loop lags
 * behind its counts by the items ended above its lowest unfinished one
 * (about its concurrency; longer while an item waits for a retry): it is
 * complete when the loop closes.
 *
 * Rows of batchflow.metric_counter are updated by the transactions that
 * close loops.  One row per workflow and loop id made every close of that
 * loop wait for the commit of the one before: under load (pgbench -c 16
 * starting 5-item runs) that upsert took 86-117 ms on average and the
 * workers executed ~110 items/s.  So each counter is spread over several
 * rows (batchflow._metric_shard()): a worker adds to the row of its pool
 * slot, which no other process uses at the same time, any other session
 * to one of batchflow._metric_shards() rows above the largest slot,
 * chosen by its pid; readers sum the rows.  (Rows chosen by pid modulo 16
 * for every session still made the 20 workers of the benchmark share
 * rows: a close waited 50-170 ms on average for another's commit.)
 *
 * The counting at a close runs in C with kept plans (src/metrics_sync.c):
 * in PL/pgSQL over the SQL functions below it re-planned five of them on
 * every close.
 *
 * Runs finished are counted per workflow and final status the same way
 * (batchflow.metric_run_counter, trigger run_metrics_finished).
 */

-- Counters ---------------------------------------------------------------------

-- Over how many rows the sessions that are not workers spread each counter
-- (see metric_counter.shard).
CREATE FUNCTION batchflow._metric_shards() RETURNS int
    LANGUAGE sql IMMUTABLE AS 'SELECT 16';
COMMENT ON FUNCTION batchflow._metric_shards() IS 'Internal: over how many rows (shards) the sessions that are not workers spread each metric counter, so that sessions closing loops or finishing runs at once do not wait for each other';

-- Which row of a counter this session adds to: a worker its pool slot's.
CREATE FUNCTION batchflow._metric_shard() RETURNS int
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_metric_shard';
COMMENT ON FUNCTION batchflow._metric_shard() IS 'Internal: the row (shard) of each metric counter this session adds to: a worker''s pool slot number, which no other process uses at the same time; for any other session 256 plus its pid modulo batchflow._metric_shards()';

CREATE TYPE batchflow.item_metrics AS (
    succeeded         bigint,
    failed            bigint,
    skipped           bigint,
    retried           bigint,
    duration_count    bigint,
    duration_sum      float8,
    duration_buckets  bigint[]
);
COMMENT ON TYPE batchflow.item_metrics IS 'Counts of a set of items: ended by status, failed attempts retried, and the histogram of their durations (cumulative counts per bucket of batchflow.metric_duration_bounds())';

-- The upper bounds (seconds) of the item duration histogram's buckets.
CREATE FUNCTION batchflow.metric_duration_bounds() RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,1800}'::float8[]
$$;
COMMENT ON FUNCTION batchflow.metric_duration_bounds() IS 'Upper bounds in seconds of the buckets of the item duration histogram (+Inf is the count)';

CREATE TABLE batchflow.metric_counter (
    workflow          text NOT NULL,
    loop_id           text NOT NULL,
    owner             oid NOT NULL,
    succeeded         bigint NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed            bigint NOT NULL DEFAULT 0 CHECK (failed >= 0),
    skipped           bigint NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    retried           bigint NOT NULL DEFAULT 0 CHECK (retried >= 0),
    duration_count    bigint NOT NULL DEFAULT 0 CHECK (duration_count >= 0),
    duration_sum      float8 NOT NULL DEFAULT 0 CHECK (duration_sum >= 0),
    duration_buckets  bigint[] NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    shard             smallint NOT NULL DEFAULT 0 CHECK (shard >= 0),
    PRIMARY KEY (workflow, loop_id, shard),
    -- 15 = cardinality(batchflow.metric_duration_bounds()), written out:
    -- the function call was parsed and planned again by every update of the
    -- table (a third of a loop close's counter upsert).  TAP 097 checks that
    -- the two agree.
    CHECK (cardinality(duration_buckets) = 15)
);
COMMENT ON TABLE batchflow.metric_counter IS 'Per workflow and loop id: items counted from closed loops, for counters that only grow (batchflow.metric_items adds the open loops)';
COMMENT ON COLUMN batchflow.metric_counter.workflow IS 'Workflow name';
COMMENT ON COLUMN batchflow.metric_counter.loop_id IS 'Node id of the loop or top-level activity';
COMMENT ON COLUMN batchflow.metric_counter.owner IS 'Owner of the workflow when the row was created; who may read the row';
COMMENT ON COLUMN batchflow.metric_counter.succeeded IS 'Items succeeded';
COMMENT ON COLUMN batchflow.metric_counter.failed IS 'Items failed for good (after their retries)';
COMMENT ON COLUMN batchflow.metric_counter.skipped IS 'Items skipped (fail-fast or cancel)';
COMMENT ON COLUMN batchflow.metric_counter.retried IS 'Failed attempts that were followed by another attempt';
COMMENT ON COLUMN batchflow.metric_counter.duration_count IS 'Items timed: succeeded or failed with a start time (the histogram''s count)';
COMMENT ON COLUMN batchflow.metric_counter.duration_sum IS 'Sum of their durations (final attempt), seconds';
COMMENT ON COLUMN batchflow.metric_counter.duration_buckets IS 'Cumulative counts of items timed at most each bound of batchflow.metric_duration_bounds()';
COMMENT ON COLUMN batchflow.metric_counter.updated_at IS 'When a loop was last added';
COMMENT ON COLUMN batchflow.metric_counter.shard IS 'Which of the workflow and loop id''s rows: batchflow._metric_shard() of the closing session (a worker''s pool slot), so that loops closing at once update different rows; readers sum them';

CREATE TABLE batchflow.metric_loop (
    loop_ref     bigint PRIMARY KEY REFERENCES batchflow.loop (id) ON DELETE CASCADE,
    run_id       bigint NOT NULL,
    counted      batchflow.item_metrics NOT NULL,
    prefix_upto  int NOT NULL DEFAULT 0 CHECK (prefix_upto >= 0),
    prefix       batchflow.item_metrics NOT NULL
);
COMMENT ON TABLE batchflow.metric_loop IS 'Per loop: what of it has been added to batchflow.metric_counter, and the counts of the items of an open loop that have all ended';
COMMENT ON COLUMN batchflow.metric_loop.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.metric_loop.run_id IS 'The run, repeated from the loop';
COMMENT ON COLUMN batchflow.metric_loop.counted IS 'The loop''s counts when they were last added (at its close, or its re-opening)';
COMMENT ON COLUMN batchflow.metric_loop.prefix_upto IS 'Open loop: every item below this index has ended';
COMMENT ON COLUMN batchflow.metric_loop.prefix IS 'Open loop: the counts of the items below prefix_upto (retried excluded)';

CREATE TABLE batchflow.metric_run_counter (
    workflow    text NOT NULL,
    status      text NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
    owner       oid NOT NULL,
    runs        bigint NOT NULL DEFAULT 0 CHECK (runs >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    shard       smallint NOT NULL DEFAULT 0 CHECK (shard >= 0),
    PRIMARY KEY (workflow, status, shard)
);
COMMENT ON TABLE batchflow.metric_run_counter IS 'Per workflow and final status: runs that finished so (a run retried and finished again counts again)';
COMMENT ON COLUMN batchflow.metric_run_counter.workflow IS 'Workflow name';
COMMENT ON COLUMN batchflow.metric_run_counter.status IS 'succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.metric_run_counter.owner IS 'Owner of the workflow when the row was created; who may read the row';
COMMENT ON COLUMN batchflow.metric_run_counter.runs IS 'Runs that finished with this status';
COMMENT ON COLUMN batchflow.metric_run_counter.updated_at IS 'When a run was last counted';
COMMENT ON COLUMN batchflow.metric_run_counter.shard IS 'Which of the workflow and status''s rows: batchflow._metric_shard() of the finishing session (a worker''s pool slot); readers sum them';

-- Counting a loop ---------------------------------------------------------------

-- Nothing counted: zeros, and a zero for every bucket.
CREATE FUNCTION batchflow._metrics_zero() RETURNS batchflow.item_metrics
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(0, 0, 0, 0, 0, 0,
               array_fill(0::bigint, ARRAY[cardinality(batchflow.metric_duration_bounds())]))::batchflow.item_metrics
$$;
COMMENT ON FUNCTION batchflow._metrics_zero() IS 'Internal: item_metrics with every count 0';

/*
 * The counts of the items of loop p_loop with p_from <= idx < p_to that
 * have ended, in one pass over the primary key (src/metrics_sync.c, which
 * also counts a closing loop with it).  Durations are those of the final
 * attempt (started_at to finished_at) of items that succeeded or failed,
 * in whole microseconds; an item of d us is in the bucket of bound b when
 * d <= b.  retried is left 0 (batchflow._loop_retried counts it).
 */
CREATE FUNCTION batchflow._range_metrics(p_loop bigint, p_from int, p_to int)
    RETURNS batchflow.item_metrics
    LANGUAGE C STABLE STRICT
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'bf_sql_range_metrics';
COMMENT ON FUNCTION batchflow._range_metrics(bigint, int, int) IS 'Internal: counts and duration histogram of the ended items of a loop in an index range';

-- Failed attempts of a loop that were followed by another attempt: its
-- failed attempts less the last one of each item that failed for good.
CREATE FUNCTION batchflow._loop_retried(p_loop bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM batchflow.item_error e WHERE e.loop_ref = p_loop)
         - (SELECT count(DISTINCT e.idx)
              FROM batchflow.item_error e
              JOIN batchflow.item i ON i.loop_ref = e.loop_ref AND i.idx = e.idx
             WHERE e.loop_ref = p_loop AND i.status = 'failed')
$$;
COMMENT ON FUNCTION batchflow._loop_retried(bigint) IS 'Internal: failed attempts of a loop that were retried';

-- a + b for two histograms' bucket arrays (the counter upsert's merge).
CREATE FUNCTION batchflow._metric_buckets_plus(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'bf_sql_metric_buckets_plus';
COMMENT ON FUNCTION batchflow._metric_buckets_plus(bigint[], bigint[]) IS 'Internal: the element-by-element sum of two bucket arrays of the same length';

-- a + b.
CREATE FUNCTION batchflow._metrics_plus(a batchflow.item_metrics, b batchflow.item_metrics)
    RETURNS batchflow.item_metrics
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(a.succeeded + b.succeeded, a.failed + b.failed, a.skipped + b.skipped,
               a.retried + b.retried, a.duration_count + b.duration_count,
               a.duration_sum + b.duration_sum,
               (SELECT array_agg(x.av + x.bv ORDER BY x.n)
                  FROM unnest(a.duration_buckets, b.duration_buckets) WITH ORDINALITY AS x(av, bv, n)))::batchflow.item_metrics
$$;
COMMENT ON FUNCTION batchflow._metrics_plus(batchflow.item_metrics, batchflow.item_metrics) IS 'Internal: the sum of two item_metrics';

-- a - b, each count at least 0.
CREATE FUNCTION batchflow._metrics_minus(a batchflow.item_metrics, b batchflow.item_metrics)
    RETURNS batchflow.item_metrics
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(greatest(a.succeeded - b.succeeded, 0),
               greatest(a.failed - b.failed, 0),
               greatest(a.skipped - b.skipped, 0),
               greatest(a.retried - b.retried, 0),
               greatest(a.duration_count - b.duration_count, 0),
               greatest(a.duration_sum - b.duration_sum, 0),
               (SELECT array_agg(greatest(x.av - x.bv, 0) ORDER BY x.n)
                  FROM unnest(a.duration_buckets, b.duration_buckets) WITH ORDINALITY AS x(av, bv, n)))::batchflow.item_metrics
$$;
COMMENT ON FUNCTION batchflow._metrics_minus(batchflow.item_metrics, batchflow.item_metrics) IS 'Internal: what a loop counts beyond what was already added for it, never negative';

/*
 * A loop closed, or bf_retry re-opened it (src/metrics_sync.c): count its
 * items (the prefix known so far plus the items above it, or all of them
 * after a re-opening, whose re-queued items count again from scratch), add
 * to batchflow.metric_counter what that adds to what was counted for it
 * before, and remember it.
 */
CREATE FUNCTION batchflow._metrics_sync(p_loop bigint) RETURNS void
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'bf_sql_metrics_sync';
COMMENT ON FUNCTION batchflow._metrics_sync(bigint) IS 'Internal: add a loop''s new counts to batchflow.metric_counter (at its close or re-opening)';

/*
 * Move the prefix of open loop p_loop up to its lowest item still pending
 * or executing (item_claim_idx finds it), counting the items in between:
 * at most p_max of them, so that one read never scans a big loop whole.
 * Never waits: a loop whose row another transaction holds (a read moving
 * it, or the transaction closing it) is left alone, so a read cannot
 * deadlock with anything.  Every loop gets its row when it is created.
 */
CREATE FUNCTION batchflow._metrics_advance(p_loop bigint, p_max int) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ml   record;
    v_upto int;
BEGIN
    SELECT m.prefix_upto, m.prefix INTO v_ml
      FROM batchflow.metric_loop m WHERE m.loop_ref = p_loop
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_upto := coalesce((SELECT min(i.idx) FROM batchflow.item i
                         WHERE i.loop_ref = p_loop AND i.status IN ('pending', 'running')),
                       (SELECT max(i.idx) + 1 FROM batchflow.item i WHERE i.loop_ref = p_loop),
                       0);
    v_upto := least(v_upto, v_ml.prefix_upto + p_max);
    IF v_upto > v_ml.prefix_upto THEN
        UPDATE batchflow.metric_loop
           SET prefix = batchflow._metrics_plus(v_ml.prefix,
                                                batchflow._range_metrics(p_loop, v_ml.prefix_upto, v_upto)),
               prefix_upto = v_upto
         WHERE loop_ref = p_loop;
    END IF;
END;
$$;
COMMENT ON FUNCTION batchflow._metrics_advance(bigint, int) IS 'Internal: count the items of an open loop that ended below its lowest unfinished one';

-- A loop was created: give it its row (unless a restore loads loops: the
-- dump carries their rows).  It closed or was re-opened: count it
-- (batchflow._metrics_sync).
-- No SET clause: the C trigger functions pin search_path only while they
-- prepare their statements (once per session), not on every call.
CREATE FUNCTION batchflow._loop_metrics_changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'bf_sql_loop_metrics_changed';
COMMENT ON FUNCTION batchflow._loop_metrics_changed() IS 'Internal: triggers loop_metrics_*, create a loop''s batchflow.metric_loop row, and count it into batchflow.metric_counter when it closes or re-opens';

CREATE TRIGGER loop_metrics_created AFTER INSERT ON batchflow.loop
    FOR EACH ROW
    WHEN (NEW.finished_at IS NULL)
    EXECUTE FUNCTION batchflow._loop_metrics_changed();
CREATE TRIGGER loop_metrics_changed AFTER UPDATE ON batchflow.loop
    FOR EACH ROW
    WHEN (OLD.finished_at IS DISTINCT FROM NEW.finished_at)
    EXECUTE FUNCTION batchflow._loop_metrics_changed();

-- Loops open when this script runs (an update of a running server) get
-- their row too.
INSERT INTO batchflow.metric_loop (loop_ref, run_id, counted, prefix_upto, prefix)
SELECT l.id, l.run_id, batchflow._metrics_zero(), 0, batchflow._metrics_zero()
  FROM batchflow.loop l
 WHERE l.finished_at IS NULL;

-- A run reached a final status: count it (not when a restore loads finished
-- runs: the dump carries batchflow.metric_run_counter).  In C
-- (src/metrics_sync.c), like _loop_metrics_changed.
CREATE FUNCTION batchflow._run_metrics_finished() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'bf_sql_run_metrics_finished';
COMMENT ON FUNCTION batchflow._run_metrics_finished() IS 'Internal: triggers run_metrics_*, count a run into batchflow.metric_run_counter when it finishes';

CREATE TRIGGER run_metrics_finished AFTER UPDATE ON batchflow.run
    FOR EACH ROW
    WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION batchflow._run_metrics_finished();
CREATE TRIGGER run_metrics_created_finished AFTER INSERT ON batchflow.run
    FOR EACH ROW
    WHEN (NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION batchflow._run_metrics_finished();

-- What the exporter reads --------------------------------------------------------

/*
 * Counters per workflow and loop id: the closed loops' counts plus, for
 * each open loop, what it counts beyond what was added for it.  Moves the
 * open loops' prefixes up first (not on a standby, which cannot write:
 * there the histogram of open loops stays where the primary left it).
 */
CREATE FUNCTION batchflow._metric_items()
    RETURNS TABLE (workflow text, loop_id text, succeeded bigint, failed bigint,
                   skipped bigint, retried bigint, duration_count bigint,
                   duration_sum float8, duration_buckets bigint[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_is_in_recovery() THEN
        PERFORM batchflow._metrics_advance(l.id, 100000)
           FROM batchflow.loop l
          WHERE l.finished_at IS NULL
          ORDER BY l.id;
    END IF;
    RETURN QUERY
    WITH parts AS (
        SELECT c.workflow, c.loop_id,
               ROW(c.succeeded, c.failed, c.skipped, c.retried, c.duration_count,
                   c.duration_sum, c.duration_buckets)::batchflow.item_metrics AS m
          FROM batchflow.metric_counter c
        UNION ALL
        SELECT v.workflow, p.loop_id,
               batchflow._metrics_minus(
                   ROW(p.completed, p.failed, p.skipped, batchflow._loop_retried(p.loop_ref),
                       (pre.m).duration_count, (pre.m).duration_sum,
                       (pre.m).duration_buckets)::batchflow.item_metrics,
                   coalesce(ml.counted, batchflow._metrics_zero()))
          FROM batchflow._progress_all p
          JOIN batchflow.run r ON r.id = p.run_id
          JOIN batchflow.workflow_version v ON v.id = r.version_id
          LEFT JOIN batchflow.metric_loop ml ON ml.loop_ref = p.loop_ref
         CROSS JOIN LATERAL (SELECT coalesce(ml.prefix, batchflow._metrics_zero()) AS m) pre
         WHERE p.finished_at IS NULL
    )
    SELECT p.workflow, p.loop_id,
           sum((p.m).succeeded)::bigint, sum((p.m).failed)::bigint,
           sum((p.m).skipped)::bigint, sum((p.m).retried)::bigint,
           sum((p.m).duration_count)::bigint, sum((p.m).duration_sum)::float8,
           (SELECT array_agg(s.total ORDER BY s.n)
              FROM (SELECT x.n, sum(x.v)::bigint AS total
                      FROM parts q, unnest((q.m).duration_buckets) WITH ORDINALITY AS x(v, n)
                     WHERE q.workflow = p.workflow AND q.loop_id = p.loop_id
                     GROUP BY x.n) s)
      FROM parts p
     GROUP BY p.workflow, p.loop_id
     ORDER BY p.workflow, p.loop_id;
END;
$$;
COMMENT ON FUNCTION batchflow._metric_items() IS 'Internal: the rows of batchflow.metric_items(), computed as the extension owner';

/*
 * Runs by workflow and status: the runs not finished now (pending,
 * running, paused, ...) and, for the final statuses, the runs that
 * finished so far (a counter).
 */
CREATE FUNCTION batchflow._metric_runs()
    RETURNS TABLE (workflow text, status text, finished boolean, runs bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT v.workflow, r.status, false, count(*)
      FROM batchflow.run r
      JOIN batchflow.workflow_version v ON v.id = r.version_id
     WHERE r.finished_at IS NULL
     GROUP BY v.workflow, r.status
    UNION ALL
    SELECT c.workflow, c.status, true, sum(c.runs)::bigint
      FROM batchflow.metric_run_counter c
     GROUP BY c.workflow, c.status
     ORDER BY 1, 2
$$;
COMMENT ON FUNCTION batchflow._metric_runs() IS 'Internal: the rows of batchflow.metric_runs(), computed as the extension owner';

/*
 * The open loops now, per workflow and loop id.  A loop is stalled when
 * items of it remain and none has ended for batchflow.stalled_after, its
 * run not paused (the same test as batchflow.stuck_runs' "stalled").
 */
CREATE FUNCTION batchflow._metric_queue()
    RETURNS TABLE (workflow text, loop_id text, open_loops bigint, stalled_loops bigint,
                   pending_items bigint, active_items bigint,
                   oldest_pending_seconds float8, idle_seconds float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT v.workflow, p.loop_id, count(*),
           count(*) FILTER (WHERE s.remaining > 0 AND r.status <> 'paused'
                              AND s.idle > batchflow._setting('batchflow.stalled_after')::interval),
           sum(s.pending)::bigint,
           sum(p.active)::bigint,
           coalesce(max(extract(epoch FROM clock_timestamp() - p.started_at)) FILTER (WHERE s.pending > 0), 0)::float8,
           coalesce(max(extract(epoch FROM s.idle)) FILTER (WHERE s.remaining > 0), 0)::float8
      FROM batchflow._progress_all p
      JOIN batchflow.run r ON r.id = p.run_id
      JOIN batchflow.workflow_version v ON v.id = r.version_id
     CROSS JOIN LATERAL (
            SELECT greatest(p.total - p.completed - p.failed - p.skipped, 0) AS remaining,
                   greatest(p.total - p.completed - p.failed - p.skipped - p.active, 0) AS pending,
                   clock_timestamp() - p.last_progress_at AS idle) s
     WHERE p.finished_at IS NULL AND r.finished_at IS NULL
     GROUP BY v.workflow, p.loop_id
     ORDER BY 1, 2
$$;
COMMENT ON FUNCTION batchflow._metric_queue() IS 'Internal: the rows of batchflow.metric_queue(), computed as the extension owner';

-- The open loops per workflow and status (running, throttled, paused, ...).
CREATE FUNCTION batchflow._metric_loops()
    RETURNS TABLE (workflow text, status text, loops bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT v.workflow, CASE WHEN r.status = 'paused' THEN 'paused' ELSE p.status END, count(*)
      FROM batchflow._progress_all p
      JOIN batchflow.run r ON r.id = p.run_id
      JOIN batchflow.workflow_version v ON v.id = r.version_id
     WHERE p.finished_at IS NULL AND r.finished_at IS NULL
     GROUP BY 1, 2
     ORDER BY 1, 2
$$;
COMMENT ON FUNCTION batchflow._metric_loops() IS 'Internal: the rows of batchflow.metric_loops(), computed as the extension owner';

/*
 * Per-run detail, for the runs executing now only: each open loop of the
 * max_runs runs that have been running the longest.  The only metrics with
 * a run_id label; bounded by max_runs.
 */
CREATE FUNCTION batchflow._metric_running_loops(max_runs int DEFAULT 20)
    RETURNS TABLE (run_id bigint, workflow text, loop_id text, remaining_items bigint,
                   active_items bigint, percent numeric, items_per_second numeric,
                   eta_seconds float8, elapsed_seconds float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.run_id, t.workflow, p.loop_id,
           greatest(p.total - p.completed - p.failed - p.skipped, 0),
           p.active::bigint, p.percent, coalesce(p.items_per_sec, 0),
           extract(epoch FROM p.eta)::float8, extract(epoch FROM p.elapsed)::float8
      FROM (SELECT r.id, v.workflow
              FROM batchflow.run r
              JOIN batchflow.workflow_version v ON v.id = r.version_id
             WHERE r.finished_at IS NULL
             ORDER BY r.started_at, r.id
             LIMIT greatest(max_runs, 0)) t
      JOIN batchflow._progress_all p ON p.run_id = t.id AND p.finished_at IS NULL
     ORDER BY p.run_id, p.node_index
$$;
COMMENT ON FUNCTION batchflow._metric_running_loops(int) IS 'Internal: the rows of batchflow.metric_running_loops(int), computed as the extension owner';

CREATE FUNCTION batchflow.worker_pool(
    OUT slot int, OUT pid int, OUT busy boolean, OUT resident_bytes bigint, OUT private_bytes bigint)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_worker_pool';
COMMENT ON FUNCTION batchflow.worker_pool() IS 'One row per worker slot: its worker''s pid, whether it executes an item, and its memory from /proc/<pid>/status (VmRSS, RssAnon)';

-- The metric functions: C functions (not SECURITY DEFINER) that compute
-- the rows of the internal function of the same name as the extension
-- owner (src/metrics_read.c).  EXECUTE is the access check; see below.
CREATE FUNCTION batchflow.metric_items()
    RETURNS TABLE (workflow text, loop_id text, succeeded bigint, failed bigint,
                   skipped bigint, retried bigint, duration_count bigint,
                   duration_sum float8, duration_buckets bigint[])
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_metrics';
COMMENT ON FUNCTION batchflow.metric_items() IS 'Counters that only grow, per workflow and loop id: items ended by status, retried attempts, item duration histogram';

CREATE FUNCTION batchflow.metric_runs()
    RETURNS TABLE (workflow text, status text, finished boolean, runs bigint)
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_metrics';
COMMENT ON FUNCTION batchflow.metric_runs() IS 'Runs not finished, by workflow and status, and runs finished so far by workflow and final status';

CREATE FUNCTION batchflow.metric_queue()
    RETURNS TABLE (workflow text, loop_id text, open_loops bigint, stalled_loops bigint,
                   pending_items bigint, active_items bigint,
                   oldest_pending_seconds float8, idle_seconds float8)
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_metrics';
COMMENT ON FUNCTION batchflow.metric_queue() IS 'Open loops per workflow and loop id: how many, how many stalled, items pending and executing, age of the oldest pending work, time since an item last ended';

CREATE FUNCTION batchflow.metric_loops()
    RETURNS TABLE (workflow text, status text, loops bigint)
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_metrics';
COMMENT ON FUNCTION batchflow.metric_loops() IS 'Open loops per workflow and status; a loop of a paused run counts as paused';

CREATE FUNCTION batchflow.metric_running_loops(max_runs int DEFAULT 20)
    RETURNS TABLE (run_id bigint, workflow text, loop_id text, remaining_items bigint,
                   active_items bigint, percent numeric, items_per_second numeric,
                   eta_seconds float8, elapsed_seconds float8)
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_metrics';
COMMENT ON FUNCTION batchflow.metric_running_loops(int) IS 'The open loops of the max_runs longest-running runs: the only per-run metrics, bounded';

-- Who may read -------------------------------------------------------------------

ALTER TABLE batchflow.metric_counter ENABLE ROW LEVEL SECURITY;
CREATE POLICY metric_counter_owner ON batchflow.metric_counter
    FOR SELECT USING (batchflow.visible(owner));

ALTER TABLE batchflow.metric_run_counter ENABLE ROW LEVEL SECURITY;
CREATE POLICY metric_run_counter_owner ON batchflow.metric_run_counter
    FOR SELECT USING (batchflow.visible(owner));

ALTER TABLE batchflow.metric_loop ENABLE ROW LEVEL SECURITY;
CREATE POLICY metric_loop_run_owner ON batchflow.metric_loop
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

REVOKE ALL ON batchflow.metric_counter, batchflow.metric_loop, batchflow.metric_run_counter FROM PUBLIC;
GRANT SELECT ON batchflow.metric_counter, batchflow.metric_loop, batchflow.metric_run_counter TO PUBLIC;

REVOKE ALL ON FUNCTION batchflow._range_metrics(bigint, int, int),
    batchflow._metric_buckets_plus(bigint[], bigint[]),
    batchflow._loop_retried(bigint),
    batchflow._metrics_plus(batchflow.item_metrics, batchflow.item_metrics),
    batchflow._metrics_minus(batchflow.item_metrics, batchflow.item_metrics),
    batchflow._metrics_sync(bigint), batchflow._metrics_advance(bigint, int),
    batchflow._loop_metrics_changed(), batchflow._metric_items(), batchflow._metric_runs(),
    batchflow._metric_queue(), batchflow._metric_loops(), batchflow._metric_running_loops(int),
    batchflow._run_metrics_finished(), batchflow._metric_shards(), batchflow._metric_shard() FROM PUBLIC;

/*
 * The metric functions cover every workflow and run, so they are for
 * monitoring roles only (members of batchflow_admin or pg_monitor, and
 * superusers): EXECUTE is the check, made as the caller.
 */
REVOKE ALL ON FUNCTION batchflow.metric_items(), batchflow.metric_runs(),
    batchflow.metric_queue(), batchflow.metric_loops(),
    batchflow.metric_running_loops(int), batchflow.worker_pool() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION batchflow.metric_items(), batchflow.metric_runs(),
    batchflow.metric_queue(), batchflow.metric_loops(),
    batchflow.metric_running_loops(int), batchflow.worker_pool()
    TO batchflow_admin, pg_monitor;

-- pg_dump carries the counters with the rest of batchflow's state.
SELECT pg_catalog.pg_extension_config_dump('batchflow.metric_counter', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.metric_loop', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.metric_run_counter', '');
