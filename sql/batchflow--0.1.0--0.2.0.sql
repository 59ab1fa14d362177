-- batchflow 0.1.0 -> 0.2.0
--
-- Every schema change of release 0.2.0, in one script, so that
-- ALTER EXTENSION batchflow UPDATE gives exactly the schema of a fresh
-- install of 0.2.0 (sql/parts/, assembled into sql/batchflow--0.2.0.sql).
-- A TAP test compares the two.  Each change is made here AND in the part
-- that owns the object; sections are appended in the order they landed, one
-- section per subject, each headed by a comment that says what it changes.
--
-- Objects created here declare their security attributes (security_barrier,
-- SET search_path) in the same statement, so that a later CREATE OR REPLACE
-- cannot silently drop them.

\echo Use "ALTER EXTENSION batchflow UPDATE TO '0.2.0'" to load this file. \quit

-- Locks first, in the order the workers take them (a claim reads loop, then
-- run, then item): the sections below alter these tables, and taking them
-- one by one as they come would deadlock with a worker that holds the run
-- table and waits for the item table.  Items executing now finish first.
LOCK TABLE batchflow.loop, batchflow.run, batchflow.item IN ACCESS EXCLUSIVE MODE;

-- Settings: SQL reads batchflow's settings through batchflow._setting(),
-- which loads the library (defining every setting with its default), instead
-- of current_setting(name, true) with the C defaults repeated as literals
-- (stuck_runs: stalled_after, slow_item_factor).
CREATE FUNCTION batchflow._setting(name text) RETURNS text
    LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'bf_sql_setting';
COMMENT ON FUNCTION batchflow._setting(text) IS 'Internal: the current value of a batchflow setting (loading the library defines every setting with its default)';

-- (_advance, now in C, checks max_items_per_run and max_item_size; it is
-- created once, in its final form, after the big-batch section below.)

CREATE OR REPLACE VIEW batchflow.stuck_runs WITH (security_barrier = true) AS
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

-- dependsOn: dependencies between the items of a loop (part 25_deps.sql):
-- item.unmet, tables item_dep, item_wait and item_ready (readiness kept out
-- of the item rows), the functions that check and record a graph, and
-- _advance calling them when a dependsOn loop starts.
ALTER TABLE batchflow.item ADD COLUMN unmet int CHECK (unmet >= 0);
COMMENT ON COLUMN batchflow.item.unmet IS 'dependsOn loops: how many dependencies the item has (set when the loop starts; what is still to succeed is in item_ready and item_wait); NULL in other loops';

CREATE TABLE batchflow.item_dep (
    loop_ref  bigint NOT NULL,
    dep_idx   int NOT NULL,
    idx       int NOT NULL,
    run_id    bigint NOT NULL,
    PRIMARY KEY (loop_ref, dep_idx, idx)
);
COMMENT ON TABLE batchflow.item_dep IS 'dependsOn: one row per dependency between two items of a loop, keyed by the dependency';
COMMENT ON COLUMN batchflow.item_dep.loop_ref IS 'The loop (batchflow.loop.id) of both items';
COMMENT ON COLUMN batchflow.item_dep.dep_idx IS 'Index of the item that must succeed first';
COMMENT ON COLUMN batchflow.item_dep.idx IS 'Index of the item that waits for it';
COMMENT ON COLUMN batchflow.item_dep.run_id IS 'The run, repeated from the loop for row-level security';

REVOKE ALL ON batchflow.item_dep FROM PUBLIC;
GRANT SELECT ON batchflow.item_dep TO PUBLIC;
ALTER TABLE batchflow.item_dep ENABLE ROW LEVEL SECURITY;
CREATE POLICY item_dep_run_owner ON batchflow.item_dep
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

-- Room on each page for the counts' new versions (HOT updates).
CREATE TABLE batchflow.item_wait (
    loop_ref  bigint NOT NULL,
    idx       int NOT NULL,
    unmet     int NOT NULL CHECK (unmet >= 0),
    run_id    bigint NOT NULL,
    PRIMARY KEY (loop_ref, idx)
) WITH (fillfactor = 50);
COMMENT ON TABLE batchflow.item_wait IS 'dependsOn: for each item waiting for more than one dependency, how many have not succeeded yet';
COMMENT ON COLUMN batchflow.item_wait.loop_ref IS 'The loop (batchflow.loop.id) of the item';
COMMENT ON COLUMN batchflow.item_wait.idx IS 'Index of the item';
COMMENT ON COLUMN batchflow.item_wait.unmet IS 'Dependencies not succeeded yet; the item is made ready when this reaches 0';
COMMENT ON COLUMN batchflow.item_wait.run_id IS 'The run, repeated from the loop for row-level security';

CREATE TABLE batchflow.item_ready (
    loop_ref  bigint NOT NULL,
    idx       int NOT NULL,
    run_id    bigint NOT NULL,
    PRIMARY KEY (loop_ref, idx)
);
COMMENT ON TABLE batchflow.item_ready IS 'dependsOn: the items whose dependencies all succeeded and that have not succeeded themselves, which claims take in index order';
COMMENT ON COLUMN batchflow.item_ready.loop_ref IS 'The loop (batchflow.loop.id) of the item';
COMMENT ON COLUMN batchflow.item_ready.idx IS 'Index of the item';
COMMENT ON COLUMN batchflow.item_ready.run_id IS 'The run, repeated from the loop for row-level security';

REVOKE ALL ON batchflow.item_wait, batchflow.item_ready FROM PUBLIC;
GRANT SELECT ON batchflow.item_wait, batchflow.item_ready TO PUBLIC;
ALTER TABLE batchflow.item_wait ENABLE ROW LEVEL SECURITY;
CREATE POLICY item_wait_run_owner ON batchflow.item_wait
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));
ALTER TABLE batchflow.item_ready ENABLE ROW LEVEL SECURITY;
CREATE POLICY item_ready_run_owner ON batchflow.item_ready
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

-- Edges go with their loop, like its items (no per-row foreign key).
CREATE FUNCTION batchflow._loop_delete_deps() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM batchflow.item_dep d USING gone g WHERE d.loop_ref = g.id;
    DELETE FROM batchflow.item_wait w USING gone g WHERE w.loop_ref = g.id;
    DELETE FROM batchflow.item_ready r USING gone g WHERE r.loop_ref = g.id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION batchflow._loop_delete_deps() IS 'Internal: delete the dependencies, counts and ready rows of deleted loops';
CREATE TRIGGER loop_delete_deps AFTER DELETE ON batchflow.loop
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION batchflow._loop_delete_deps();

/*
 * Check a dependsOn loop's graph, given its items (the loop's input array),
 * and record it: when the keys are unique, every dependency names an item
 * of the loop and there is no cycle, the edges go into item_dep, the items
 * without dependencies into item_ready, those with several into item_wait,
 * and the result is each item's number of dependencies, by index (the item
 * rows are inserted with it); otherwise "problem" says what is wrong and
 * nothing is written.
 */
CREATE FUNCTION batchflow._deps_link(p_loop bigint, p_run bigint, p_node jsonb, p_items jsonb,
                                     OUT problem text, OUT unmet int[])
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_deps_link';
COMMENT ON FUNCTION batchflow._deps_link(bigint, bigint, jsonb, jsonb) IS 'Internal: check a dependsOn loop''s graph (keys, unknown dependencies, cycles), record its edges and count each item''s dependencies';

/*
 * Called by _advance for a dependsOn loop, after its loop row and before
 * its items are inserted: returns the items' counts of dependencies.  A
 * bad graph is an error of bf_start for the first node (nothing is
 * created); for a later node it fails the run, the loop row is removed
 * again, as for an input source that is not an array, and the result is
 * NULL.
 */
CREATE FUNCTION batchflow._deps_start(p_run bigint, p_loop bigint, p_node jsonb, p_items jsonb,
                                      p_from int) RETURNS int[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d record;
    v_hint text := 'Give every item a unique key, list in its dependencies only keys of items of the same loop, and make sure no item depends on itself, directly or through others.';
BEGIN
    SELECT * INTO d FROM batchflow._deps_link(p_loop, p_run, p_node, p_items);
    IF d.problem IS NULL THEN
        RETURN d.unmet;
    END IF;
    IF p_from = 0 THEN
        RAISE EXCEPTION '%', d.problem USING ERRCODE = 'invalid_parameter_value', HINT = v_hint;
    END IF;
    DELETE FROM batchflow.loop WHERE id = p_loop;
    UPDATE batchflow.run
       SET status = 'failed', finished_at = clock_timestamp(), error = d.problem
     WHERE id = p_run;
    PERFORM batchflow._run_finished_on_commit();
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION batchflow._deps_start(bigint, bigint, jsonb, jsonb, int) IS 'Internal: set up a dependsOn loop at its start, or refuse it (bf_start error, or failed run)';

/*
 * bf_retry re-queued failed and skipped items: count again which of their
 * dependencies have not succeeded.  An item with none left is ready (it
 * may have been ready before); one with some left is not, and waits for
 * that many.
 */
CREATE FUNCTION batchflow._deps_retry(p_run bigint) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH p AS (
        SELECT i.loop_ref, i.idx, i.run_id,
               (SELECT count(*)
                  FROM batchflow.item_dep d
                  JOIN batchflow.item x ON x.loop_ref = d.loop_ref AND x.idx = d.dep_idx
                 WHERE d.loop_ref = i.loop_ref AND d.idx = i.idx
                   AND x.status <> 'succeeded')::int AS unmet
          FROM batchflow.item i
         WHERE i.run_id = p_run AND i.status = 'pending' AND i.unmet IS NOT NULL
    ), not_ready AS (
        DELETE FROM batchflow.item_ready r USING p
         WHERE r.loop_ref = p.loop_ref AND r.idx = p.idx AND p.unmet > 0
    ), waiting AS (
        INSERT INTO batchflow.item_wait (loop_ref, idx, unmet, run_id)
        SELECT p.loop_ref, p.idx, p.unmet, p.run_id FROM p WHERE p.unmet > 0
            ON CONFLICT (loop_ref, idx) DO UPDATE SET unmet = excluded.unmet
    )
    INSERT INTO batchflow.item_ready (loop_ref, idx, run_id)
    SELECT p.loop_ref, p.idx, p.run_id FROM p WHERE p.unmet = 0
        ON CONFLICT (loop_ref, idx) DO NOTHING;
$$;
COMMENT ON FUNCTION batchflow._deps_retry(bigint) IS 'Internal: count again the dependencies still to succeed of the items bf_retry re-queued';

REVOKE ALL ON FUNCTION batchflow._loop_delete_deps(), batchflow._deps_link(bigint, bigint, jsonb, jsonb),
    batchflow._deps_start(bigint, bigint, jsonb, jsonb, int), batchflow._deps_retry(bigint) FROM PUBLIC;

-- (_advance calls batchflow._deps_start when a dependsOn loop starts: see its
-- final definition after the big-batch section.)

-- Child workflows: the workflow activity (part 26_child_runs.sql):
-- run.parent_run, item.child_run, starting a child run, completing the
-- parent item when the child ends (trigger run_child_ended), cancelling
-- children with their parent; the runs view shows parent_run.
ALTER TABLE batchflow.run ADD COLUMN parent_run bigint
    REFERENCES batchflow.run (id) ON DELETE SET NULL;
COMMENT ON COLUMN batchflow.run.parent_run IS 'For a child run started by a workflow activity: the run of the item that started it';
CREATE INDEX run_parent_idx ON batchflow.run (parent_run) WHERE parent_run IS NOT NULL;

ALTER TABLE batchflow.item ADD COLUMN child_run bigint;
COMMENT ON COLUMN batchflow.item.child_run IS 'Workflow activities: the child run started for this item (kept after it ends, so that bf_retry re-runs it rather than a new one)';
CREATE INDEX item_child_run_idx ON batchflow.item (child_run) WHERE child_run IS NOT NULL;

/*
 * Start a child run for item (p_loop, p_idx) of run p_parent: version
 * p_version, owned by the parent's owner, with input p_input.  The caller
 * (a worker, in the item's claim transaction) has checked the workflow and
 * the owner's right to use it.  Returns the child run's id.
 */
CREATE FUNCTION batchflow._start_child(p_parent bigint, p_loop bigint, p_idx int,
                                       p_version int, p_input jsonb) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_child bigint;
BEGIN
    INSERT INTO batchflow.run (version_id, owner, input, vars, parent_run, started_at)
    SELECT p_version, r.owner, p_input,
           CASE WHEN jsonb_typeof(p_input) = 'object' THEN p_input ELSE '{}' END, r.id,
           clock_timestamp()
      FROM batchflow.run r WHERE r.id = p_parent
    RETURNING id INTO v_child;
    PERFORM batchflow._advance(v_child, 0);
    UPDATE batchflow.item
       SET status = 'running', child_run = v_child, worker_pid = NULL, not_before = NULL,
           started_at = (SELECT started_at FROM batchflow.run WHERE id = v_child)
     WHERE loop_ref = p_loop AND idx = p_idx;
    RETURN v_child;
END;
$$;
COMMENT ON FUNCTION batchflow._start_child(bigint, bigint, int, int, jsonb) IS 'Internal: start the child run of a workflow activity''s item and mark the item running';

/*
 * A child run reached its final status: complete its parent item in this
 * same transaction.  Succeeded: the item succeeds.  Failed or cancelled:
 * the attempt failed; under "retry" with attempts left the item waits
 * for its backoff, and its next claim retries the child run (bf_retry of
 * the child: only the child's failed items run again); otherwise it
 * fails, its dependents are skipped, and under fail-fast the loop fails.
 * A child cancelled because its parent's loop was cancelled is skipped.
 * Output: {"run": child id, "status": ...}.
 */
CREATE FUNCTION batchflow._child_run_ended() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i       record;
    l       batchflow.loop;
    v_out   jsonb := jsonb_build_object('run', NEW.id, 'status', NEW.status);
    v_err   text;
    v_delay float8;
BEGIN
    SELECT it.loop_ref, it.idx, it.attempts INTO i
      FROM batchflow.item it
     WHERE it.child_run = NEW.id AND it.status IN ('pending', 'running')
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO l FROM batchflow.loop WHERE id = i.loop_ref;

    IF NEW.status = 'succeeded' THEN
        UPDATE batchflow.item
           SET status = 'succeeded', attempts = attempts + 1, finished_at = clock_timestamp(),
               output = v_out, error = NULL, not_before = NULL
         WHERE loop_ref = i.loop_ref AND idx = i.idx;
        IF l.node ? 'dependsOn' THEN
            PERFORM batchflow._deps_item_ended(l.id, i.idx, true);
        END IF;
        IF l.kind = 'activity' THEN
            UPDATE batchflow.run
               SET outputs = outputs || jsonb_build_object(l.node_id, v_out),
                   vars = CASE WHEN l.node ? 'output'
                               THEN vars || jsonb_build_object(l.node ->> 'output', v_out)
                               ELSE vars END
             WHERE id = l.run_id;
        END IF;
    ELSE
        v_err := format('child run %s of workflow "%s" %s%s', NEW.id,
                        (SELECT v.workflow FROM batchflow.workflow_version v WHERE v.id = NEW.version_id),
                        NEW.status, coalesce(': ' || NEW.error, ''));
        INSERT INTO batchflow.item_error (run_id, loop_ref, idx, attempt, error, failed_at)
        VALUES (l.run_id, l.id, i.idx, i.attempts + 1, v_err, clock_timestamp());
        IF l.status = 'cancelled' THEN
            UPDATE batchflow.item
               SET status = 'skipped', attempts = attempts + 1, finished_at = clock_timestamp(),
                   output = v_out, error = 'cancelled', not_before = NULL
             WHERE loop_ref = i.loop_ref AND idx = i.idx;
        ELSIF l.status = 'running' AND l.error_strategy = 'retry' AND l.kind = 'loop'
              AND i.attempts + 1 <= l.max_retries THEN
            v_delay := least(l.retry_delay_ms * power(2, i.attempts), 3600000);
            UPDATE batchflow.item
               SET status = 'pending', attempts = attempts + 1, output = v_out, error = v_err,
                   not_before = clock_timestamp() + make_interval(secs => v_delay / 1000)
             WHERE loop_ref = i.loop_ref AND idx = i.idx;
        ELSE
            UPDATE batchflow.item
               SET status = 'failed', attempts = attempts + 1, finished_at = clock_timestamp(),
                   output = v_out, error = v_err, not_before = NULL
             WHERE loop_ref = i.loop_ref AND idx = i.idx;
            IF l.node ? 'dependsOn' THEN
                PERFORM batchflow._deps_item_ended(l.id, i.idx, false);
            END IF;
            IF l.error_strategy = 'fail-fast' OR l.kind = 'activity' THEN
                UPDATE batchflow.loop
                   SET status = 'failed', error = format('item %s of "%s" failed: %s', i.idx, l.node_id, v_err)
                 WHERE id = l.id AND status = 'running';
            END IF;
        END IF;
    END IF;

    -- Not counted by a worker: count the loop's items until the next rebuild.
    UPDATE batchflow.loop_progress SET state = 'recount', updated_at = clock_timestamp()
     WHERE loop_ref = l.id AND state = 'live';
    PERFORM batchflow._close_loop(l.id);
    -- A slot of the parent loop is free, and dependents may be ready.
    PERFORM batchflow._wake_on_commit();
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION batchflow._child_run_ended() IS 'Internal: a child run finished; complete the item that started it';
CREATE TRIGGER run_child_ended AFTER UPDATE OF status ON batchflow.run
    FOR EACH ROW
    WHEN (NEW.parent_run IS NOT NULL AND OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION batchflow._child_run_ended();

/*
 * bf_cancel of a run cancels the child runs of its items, and theirs: each
 * child's open loops are cancelled first (so that the items waiting for a
 * grandchild end skipped, not failed), then its own children, then the
 * loops with nothing executing are closed, which cancels the child and,
 * through run_child_ended, completes its parent item.
 */
CREATE FUNCTION batchflow._cancel_children(p_run bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c bigint;
BEGIN
    FOR c IN SELECT i.child_run
               FROM batchflow.item i JOIN batchflow.run r ON r.id = i.child_run
              WHERE i.run_id = p_run AND i.status IN ('pending', 'running')
                AND r.finished_at IS NULL
              ORDER BY i.child_run
    LOOP
        UPDATE batchflow.loop SET status = 'cancelled', error = 'parent run cancelled'
         WHERE run_id = c AND finished_at IS NULL AND status = 'running';
        PERFORM batchflow._cancel_children(c);
        PERFORM batchflow._close_loop(l.id)
           FROM batchflow.loop l WHERE l.run_id = c AND l.finished_at IS NULL;
        UPDATE batchflow.run
           SET status = 'cancelled', finished_at = clock_timestamp(), error = 'parent run cancelled'
         WHERE id = c AND finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM batchflow.loop WHERE run_id = c AND finished_at IS NULL);
        IF FOUND THEN
            PERFORM batchflow._run_finished_on_commit();
        END IF;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION batchflow._cancel_children(bigint) IS 'Internal: cancel the unfinished child runs of a run''s items, recursively';

-- SQL access to the dependency bookkeeping of src/deps.c, for the trigger above.
CREATE FUNCTION batchflow._deps_item_ended(p_loop bigint, p_idx int, p_succeeded boolean)
    RETURNS void
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_deps_item_ended';
COMMENT ON FUNCTION batchflow._deps_item_ended(bigint, int, boolean) IS 'Internal: release (succeeded) or skip (failed) the dependents of an item that ended outside a worker';

REVOKE ALL ON FUNCTION batchflow._start_child(bigint, bigint, int, int, jsonb),
    batchflow._child_run_ended(), batchflow._cancel_children(bigint),
    batchflow._deps_item_ended(bigint, int, boolean) FROM PUBLIC;

CREATE OR REPLACE VIEW batchflow.runs WITH (security_invoker = true) AS
SELECT r.id,
       v.workflow,
       v.version,
       r.status,
       r.input,
       r.started_at,
       r.finished_at,
       r.error,
       r.owner::regrole AS owner,
       r.current_node,
       r.vars,
       r.parent_run
  FROM batchflow.run r
  JOIN batchflow.workflow_version v ON v.id = r.version_id
 WHERE batchflow.visible(r.owner);
COMMENT ON COLUMN batchflow.runs.parent_run IS 'For a child run started by a workflow activity: the run of the item that started it';

-- bf_progress gains "blocked" (items of a dependsOn loop waiting for a
-- dependency), a new last column: bf_progress is created again with the
-- new result type; batchflow._progress is dropped here and created once,
-- in its final form, in "Run control, part 2" below.
DROP FUNCTION bf_progress(bigint);
DROP FUNCTION batchflow._progress(bigint);
CREATE FUNCTION bf_progress(run bigint)
    RETURNS TABLE (loop_id text, status text, total bigint, completed bigint, failed bigint,
                   active int, percent numeric, items_per_sec numeric, elapsed interval,
                   eta interval, blocked bigint)
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_progress';
COMMENT ON FUNCTION bf_progress(bigint) IS 'Progress of each loop of a run: counts, items executing, percent, recent rate, elapsed time, ETA, and items waiting for their dependencies (blocked)';

-- END i16 sections
-- Backups (issue 13): every table and sequence is marked for pg_dump, and a
-- restore's loads of loops and progress rows are told apart from the
-- engine's writes (sql/parts/70_backup.sql, 41_progress_compute.sql).
SELECT pg_catalog.pg_extension_config_dump('batchflow.workflow', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.workflow_version', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.workflow_version_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.run', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.loop', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.loop_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.item', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.item_error', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.item_error_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.item_dep', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.item_wait', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.item_ready', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.loop_progress', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.progress_counter', '');
SELECT pg_catalog.pg_extension_config_dump('batchflow.pruned_run', '');

-- Is the current statement a restore's load of table `tbl` (COPY or INSERT
-- sent by pg_restore or psql), rather than the engine writing it?
CREATE FUNCTION batchflow._restoring(tbl text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT current_query() ~* ('^(\s|--[^\n]*\n)*(COPY|INSERT\s+INTO)\s+' ||
                           replace(tbl, '.', '\.') || '[\s(]')
$$;
COMMENT ON FUNCTION batchflow._restoring(text) IS 'Internal: true when the statement being executed is a COPY or INSERT of a restore into the given table';
REVOKE ALL ON FUNCTION batchflow._restoring(text) FROM PUBLIC;

-- A progress row loaded by a restore (not by _loop_created) is recounted.
CREATE FUNCTION batchflow._loop_progress_restored() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    -- _loop_created inserts from within a trigger: depth 2 or more.
    IF pg_trigger_depth() = 1 AND NEW.state = 'live' THEN
        NEW.state := 'recount';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION batchflow._loop_progress_restored() IS 'Internal: a live progress row loaded by a restore is marked for recount';
CREATE TRIGGER loop_progress_restored BEFORE INSERT ON batchflow.loop_progress
    FOR EACH ROW EXECUTE FUNCTION batchflow._loop_progress_restored();

-- batchflow._loop_created gains the restore check: it is created once, in
-- its final form, under "NOTIFY payloads of a new run and a new loop" below.


-- Wake-ups: a new loop wakes only as many idle workers as it can use
-- (sql/parts/27_wakeup.sql, src/wakeup.c).
CREATE FUNCTION batchflow._loop_wake() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'bf_sql_loop_wake';
COMMENT ON FUNCTION batchflow._loop_wake() IS 'Internal: at commit, wake as many idle workers as a new loop can use';
REVOKE ALL ON FUNCTION batchflow._loop_wake() FROM PUBLIC;

CREATE TRIGGER loop_wake AFTER INSERT ON batchflow.loop
    FOR EACH ROW WHEN (NEW.finished_at IS NULL)
    EXECUTE FUNCTION batchflow._loop_wake();
COMMENT ON TRIGGER loop_wake ON batchflow.loop IS 'Wakes min(items, cap) idle workers when the transaction that created the loop commits';

-- NOTIFY payloads of a new run and a new loop, built from the new row
-- instead of the progress view: nothing has ended yet (a third of
-- bf_start's time went into planning the view; sql/parts/41_progress_compute.sql).
-- They are announced through batchflow._announce (created at the end of
-- this script, section "Announcements after the commit").
CREATE OR REPLACE FUNCTION batchflow._loop_created() RETURNS trigger
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

CREATE OR REPLACE FUNCTION batchflow._run_changed() RETURNS trigger
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

-- The NOTIFY payload functions in PL/pgSQL, so that their plan of
-- _progress_all is kept per session instead of made on every call
-- (sql/parts/41_progress_compute.sql).
-- The payload announced for a loop: run, loop, status and counts.
-- PL/pgSQL, not SQL: its plan of _progress_all is kept for the session
-- (a SQL function planned that view again on every call; the workers
-- call it for every loop they close).
CREATE OR REPLACE FUNCTION batchflow._progress_json(p_loop bigint) RETURNS text
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

-- The payload announced for a run: its status and the sum over its loops
-- (PL/pgSQL for the kept plan, as _progress_json).
CREATE OR REPLACE FUNCTION batchflow._run_json(p_run bigint, p_status text) RETURNS text
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

-- History pruning: the watermark no longer allows "an hour" for a run whose
-- closing transaction commits late (batchflow._prune_history is created
-- once, in its final form, in "Run control, part 2" below).

-- Comment: who may add versions of a workflow (bf_can_manage: the owner, the
-- roles with its privileges, members of batchflow_admin and superusers).
COMMENT ON COLUMN batchflow.workflow.owner IS 'OID of the role that first registered the workflow; it, the roles with its privileges, members of batchflow_admin and superusers may add versions';

-- Progress: a closed loop has no active item.  A worker clears the item it
-- shows in shared memory only after its commit, so a loop closed by another
-- session in that moment announced the item as ended and as active.  A loop
-- of workflow activities counts its child runs in flight as active (they
-- hold no worker; issue 16).  The view is created here once, in its final
-- form.
CREATE OR REPLACE VIEW batchflow._progress_all AS
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
COMMENT ON COLUMN batchflow._progress_all.active IS 'Items executing right now; for a loop of workflow activities, its child runs in flight';

-- Big batches (issue 15): query, keyRanges and large array sources
-- materialised by the workers (table loop_fill, _lazy_loop called by
-- _advance, _close_loop waits for materialisation), throttles
-- (_loop_throttled), bf_progress shows 'throttled' and an ETA from the
-- planner's estimate while a loop materialises.

CREATE TABLE batchflow.loop_fill (
    loop_ref    bigint PRIMARY KEY REFERENCES batchflow.loop (id) ON DELETE CASCADE,
    run_id      bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('query', 'array', 'keyRanges')),
    source      jsonb NOT NULL CHECK (jsonb_typeof(source) = 'object'),
    next_idx    int NOT NULL DEFAULT 0 CHECK (next_idx >= 0),
    next_key    text,
    next_from   jsonb,
    estimate    float8,
    started_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE batchflow.loop_fill IS 'One row per loop whose items are still being materialised by the workers (query, keyRanges and large array sources)';
COMMENT ON COLUMN batchflow.loop_fill.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.loop_fill.run_id IS 'The run, repeated from the loop';
COMMENT ON COLUMN batchflow.loop_fill.kind IS 'query, array or keyRanges';
COMMENT ON COLUMN batchflow.loop_fill.source IS 'What to materialise: {"query"}, {"from", "name"} of an array, or the resolved key ranges scan';
COMMENT ON COLUMN batchflow.loop_fill.next_idx IS 'Items materialised so far: the index of the next one';
COMMENT ON COLUMN batchflow.loop_fill.next_key IS 'keyRanges: the first key of the next range, as text; NULL before the first';
COMMENT ON COLUMN batchflow.loop_fill.next_from IS 'keyRanges: the first key of the next range, as jsonb';
COMMENT ON COLUMN batchflow.loop_fill.estimate IS 'Expected number of items: the planner''s row estimate of a query, the length of an array';
COMMENT ON COLUMN batchflow.loop_fill.started_at IS 'When the loop started';

ALTER TABLE batchflow.loop_fill ENABLE ROW LEVEL SECURITY;
CREATE POLICY loop_fill_run_owner ON batchflow.loop_fill
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));
REVOKE ALL ON batchflow.loop_fill FROM PUBLIC;
GRANT SELECT ON batchflow.loop_fill TO PUBLIC;

/*
 * A run's input is stored as it came (input) and as its first variables
 * (vars): a 1,000,000-element array is two ~10 MB values, which pglz took
 * ~2 s to compress in bf_start.  lz4, when the server has it, takes
 * milliseconds.
 */
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE batchflow.run ALTER COLUMN input SET COMPRESSION lz4,
                                  ALTER COLUMN vars SET COMPRESSION lz4,
                                  ALTER COLUMN outputs SET COMPRESSION lz4;
    END IF;
END
$$;

-- Arrays of at least this many elements are materialised by the workers.
CREATE FUNCTION batchflow._lazy_threshold() RETURNS int
    LANGUAGE sql IMMUTABLE AS 'SELECT 10000';
COMMENT ON FUNCTION batchflow._lazy_threshold() IS 'Internal: JSON arrays of at least this many elements are materialised by the workers, in chunks, behind bf_start';

CREATE FUNCTION batchflow._loop_throttled(loop_ref bigint) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_loop_throttled';
COMMENT ON FUNCTION batchflow._loop_throttled(bigint) IS 'Internal: was an item of the loop held back by maxItemsPerSecond or maxReplicationLag a moment ago?';

/*
 * Called by _advance when a run reaches loop node p_node (index p_k) whose
 * input array, if it has one, has p_n elements.  Returns false when the
 * loop's items are to be created by _advance as usual; otherwise creates
 * the loop and its loop_fill row and returns true.  For keyRanges, checks
 * the table and its index as the run's owner p_owner: a problem is raised
 * when p_raise (bf_start reaching its first loop), and otherwise fails the
 * run (still returning true).
 */
CREATE FUNCTION batchflow._lazy_loop(p_run bigint, p_k int, p_node jsonb, p_n int,
                                     p_owner oid, p_raise boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_src      jsonb := p_node -> 'inputSource';
    v_kind     text;
    v_source   jsonb;
    v_est      float8;
    v_strategy text;
    v_name     text[];
    v_rel      regclass;
    v_key      text;
    v_att      record;
    v_msg      text;
    v_detail   text;
    v_hint     text;
    v_code     text;
    v_lid      bigint;
BEGIN
    IF v_src ? 'query' THEN
        v_kind := 'query';
        v_source := jsonb_build_object('query', v_src ->> 'query');
    ELSIF v_src ? 'keyRanges' THEN
        v_kind := 'keyRanges';
        v_key := v_src -> 'keyRanges' ->> 'key';
        BEGIN
            v_name := parse_ident(v_src -> 'keyRanges' ->> 'table');
        EXCEPTION WHEN invalid_parameter_value THEN
            v_name := ARRAY[v_src -> 'keyRanges' ->> 'table'];
        END;
        IF cardinality(v_name) = 1 THEN
            v_name := ARRAY['public'] || v_name;
        END IF;
        SELECT c.oid INTO v_rel
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE cardinality(v_name) = 2 AND n.nspname = v_name[1] AND c.relname = v_name[2]
           AND c.relkind IN ('r', 'p', 'm');
        IF v_rel IS NULL THEN
            v_code := 'undefined_table';
            v_msg := format('node "%s": inputSource keyRanges: table "%s" does not exist',
                            p_node ->> 'id', v_src -> 'keyRanges' ->> 'table');
            v_detail := 'The table is looked up when the loop starts; a name without a schema means schema public.';
            v_hint := 'Write the table as "schema.name".';
        ELSE
            SELECT a.attnum, format_type(a.atttypid, a.atttypmod) AS type INTO v_att
              FROM pg_attribute a
             WHERE a.attrelid = v_rel AND a.attname = v_key AND a.attnum > 0 AND NOT a.attisdropped;
            IF NOT FOUND THEN
                v_code := 'undefined_column';
                v_msg := format('node "%s": inputSource keyRanges: column "%s" of table %s does not exist',
                                p_node ->> 'id', v_key, v_rel);
                v_detail := 'The key must be a column of the table.';
                v_hint := 'Name the column the ranges are cut on, usually the primary key.';
            ELSIF NOT has_column_privilege(p_owner, v_rel, v_att.attnum, 'SELECT') THEN
                v_code := 'insufficient_privilege';
                v_msg := format('permission denied for table %s', v_rel);
                v_detail := format('The key ranges are read as the role that started the run, which may not read column "%s".', v_key);
                v_hint := format('GRANT SELECT ON %s TO the role that starts the run.', v_rel);
            ELSIF NOT EXISTS (SELECT 1 FROM pg_index i
                                JOIN pg_class ic ON ic.oid = i.indexrelid
                                JOIN pg_am am ON am.oid = ic.relam
                               WHERE i.indrelid = v_rel AND i.indkey[0] = v_att.attnum
                                 AND am.amname = 'btree' AND i.indpred IS NULL
                                 AND i.indisvalid AND i.indisready) THEN
                v_code := 'object_not_in_prerequisite_state';
                v_msg := format('node "%s": inputSource keyRanges needs an index on %s (%s)',
                                p_node ->> 'id', v_rel, v_key);
                v_detail := 'Ranges are found by keyset scans of a btree index whose first column is the key; without one, every range would scan the whole table.';
                v_hint := format('Create one: CREATE INDEX ON %s (%I);', v_rel, v_key);
            END IF;
        END IF;
        IF v_msg IS NOT NULL THEN
            IF p_raise THEN
                RAISE EXCEPTION '%', v_msg USING ERRCODE = v_code, DETAIL = v_detail, HINT = v_hint;
            END IF;
            UPDATE batchflow.run
               SET status = 'failed', finished_at = clock_timestamp(), current_node = p_k,
                   error = format('%s: %s %s', v_msg, v_detail, v_hint)
             WHERE id = p_run;
            PERFORM batchflow._run_finished_on_commit();
            RETURN true;
        END IF;
        v_source := jsonb_build_object(
            'size', (v_src -> 'keyRanges' ->> 'size')::int,
            -- Qualified: an unqualified ORDER BY would sort the text output column.
            'first', format('SELECT t.%1$I::text, to_jsonb(t.%1$I) FROM %2$s AS t WHERE t.%1$I IS NOT NULL ORDER BY t.%1$I LIMIT 1',
                            v_key, v_rel),
            'next', format('SELECT t.%1$I::text, to_jsonb(t.%1$I) FROM %2$s AS t WHERE t.%1$I > $1::%3$s ORDER BY t.%1$I OFFSET $2 LIMIT 1',
                           v_key, v_rel, v_att.type));
    ELSIF p_n >= batchflow._lazy_threshold() AND NOT p_node ? 'dependsOn' THEN
        v_kind := 'array';
        v_est := p_n;
        v_source := CASE WHEN v_src ? 'static' THEN jsonb_build_object('from', 'static')
                         WHEN v_src ? 'variable' THEN jsonb_build_object('from', 'vars', 'name', v_src ->> 'variable')
                         ELSE jsonb_build_object('from', 'outputs', 'name', v_src ->> 'activity') END;
    ELSE
        RETURN false;
    END IF;

    v_strategy := coalesce(p_node ->> 'errorStrategy', 'fail-fast');
    INSERT INTO batchflow.loop (run_id, node_index, node_id, kind, node, sequential,
                                concurrency, error_strategy, max_retries,
                                retry_delay_ms, total, status, started_at)
    VALUES (p_run, p_k, p_node ->> 'id', 'loop', p_node,
            p_node ->> 'loopType' = 'sequential',
            coalesce((p_node ->> 'concurrency')::int, 1),
            v_strategy,
            coalesce((p_node ->> 'maxRetries')::int,
                     CASE WHEN v_strategy = 'retry' THEN 3 ELSE 0 END),
            coalesce((p_node ->> 'retryDelayMs')::int, 1000),
            CASE WHEN v_kind = 'array' THEN p_n ELSE 0 END,
            'running', clock_timestamp())
    RETURNING id INTO v_lid;
    INSERT INTO batchflow.loop_fill (loop_ref, run_id, kind, source, estimate)
    VALUES (v_lid, p_run, v_kind, v_source, v_est);
    UPDATE batchflow.run SET current_node = p_k WHERE id = p_run;
    PERFORM batchflow._wake_on_commit();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION batchflow._lazy_loop(bigint, int, jsonb, int, oid, boolean) IS 'Internal: start a loop whose items the workers materialise in chunks (query, keyRanges, large arrays)';

REVOKE ALL ON FUNCTION batchflow._lazy_threshold(), batchflow._loop_throttled(bigint),
    batchflow._lazy_loop(bigint, int, jsonb, int, oid, boolean) FROM PUBLIC;

-- _advance and _close_loop in C (src/loop_start.c, src/loop_close.c), each
-- created once here in its final form: the limits, the dependsOn counts
-- written with the items, the lazy loops of big batches, and a loop closed
-- only once its items are all materialised.  bf_start and the workers call
-- the C code directly; these entry points serve bf_cancel and the child-run
-- functions.
CREATE OR REPLACE FUNCTION batchflow._advance(p_run bigint, p_from int) RETURNS void
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'bf_sql_advance';

CREATE OR REPLACE FUNCTION batchflow._close_loop(p_loop bigint) RETURNS boolean
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'bf_sql_close_loop';

SELECT pg_catalog.pg_extension_config_dump('batchflow.loop_fill', '');
-- Every database (issue 13): the workers serve every database with the
-- extension; the install and update scripts tell them at commit
-- (sql/parts/80_databases.sql).  Other sections may follow this one: the
-- call only takes effect when the update commits.
CREATE FUNCTION batchflow._database_ready() RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_database_ready';
COMMENT ON FUNCTION batchflow._database_ready() IS 'Internal: at commit, tell the workers that this database has the extension (or warn that none serves it)';
REVOKE ALL ON FUNCTION batchflow._database_ready() FROM PUBLIC;

SELECT batchflow._database_ready();

-- Metrics with bounded labels for Prometheus (issue 19): counters per
-- workflow and loop that survive pruning and restarts, the item duration
-- histogram, the worker pool with its memory.  Same objects as
-- sql/parts/46_metrics.sql.

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
-- Run control and the workflow catalog (issue 14): run status 'paused';
-- bf_cancel gains force; bf_pause, bf_resume, bf_purge, bf_unregister; view
-- batchflow.workflows.

ALTER TABLE batchflow.run DROP CONSTRAINT run_status_check,
    ADD CONSTRAINT run_status_check
        CHECK (status IN ('pending', 'running', 'paused', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE batchflow.run DROP CONSTRAINT run_check,
    ADD CONSTRAINT run_check
        CHECK ((finished_at IS NULL) = (status IN ('pending', 'running', 'paused')));
COMMENT ON COLUMN batchflow.run.status IS 'pending, running, paused (bf_pause: no new item starts), succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.run.finished_at IS 'When the run reached a final status; NULL while pending, running or paused';
COMMENT ON COLUMN batchflow.runs.status IS 'pending, running, paused, succeeded, failed or cancelled';

DROP FUNCTION bf_cancel(bigint);
CREATE FUNCTION bf_cancel(run bigint, force boolean DEFAULT false) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_cancel';
COMMENT ON FUNCTION bf_cancel(bigint, boolean) IS 'Stop claiming new items of a run and mark it cancelled; in-flight items end, or with force are interrupted (rolled back, skipped with error cancelled)';

CREATE FUNCTION bf_pause(run bigint) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_pause';
COMMENT ON FUNCTION bf_pause(bigint) IS 'Start no new item of a running run (items executing now finish); its status becomes paused. False if it was not running';

CREATE FUNCTION bf_resume(run bigint) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_resume';
COMMENT ON FUNCTION bf_resume(bigint) IS 'Let a paused run carry on where it stopped (status running). False if it was not paused';

CREATE FUNCTION bf_purge(older_than interval) RETURNS bigint
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_purge';
COMMENT ON FUNCTION bf_purge(interval) IS 'Delete the finished runs you may see that finished before now() - older_than, with their loops, items and errors; returns how many runs';

CREATE FUNCTION bf_unregister(workflow text) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_unregister';
COMMENT ON FUNCTION bf_unregister(text) IS 'Remove a workflow, its versions and its finished runs; refused (55006) while one of its runs is not finished';

CREATE VIEW batchflow.workflows WITH (security_invoker = true) AS
SELECT w.name,
       w.owner::regrole AS owner,
       v.version,
       c.versions,
       v.definition,
       w.created_at,
       v.created_at AS updated_at,
       coalesce(r.runs, 0) AS runs,
       r.last_run_at
  FROM batchflow.workflow w
 CROSS JOIN LATERAL (SELECT count(*) AS versions FROM batchflow.workflow_version x
                      WHERE x.workflow = w.name) c
  JOIN LATERAL (SELECT x.version, x.definition, x.created_at FROM batchflow.workflow_version x
                 WHERE x.workflow = w.name ORDER BY x.version DESC LIMIT 1) v ON true
  LEFT JOIN LATERAL (SELECT count(*) AS runs, max(run.started_at) AS last_run_at
                       FROM batchflow.run
                       JOIN batchflow.workflow_version x ON x.id = run.version_id
                      WHERE x.workflow = w.name) r ON true
 WHERE batchflow.visible(w.owner);
COMMENT ON VIEW batchflow.workflows IS 'One row per workflow you may see: its newest version and definition, how many versions and runs';
COMMENT ON COLUMN batchflow.workflows.name IS 'Workflow name, as passed to bf_register and bf_start';
COMMENT ON COLUMN batchflow.workflows.owner IS 'Role that first registered the workflow';
COMMENT ON COLUMN batchflow.workflows.version IS 'Newest version number (the one bf_start runs)';
COMMENT ON COLUMN batchflow.workflows.versions IS 'How many versions were registered';
COMMENT ON COLUMN batchflow.workflows.definition IS 'Definition of the newest version';
COMMENT ON COLUMN batchflow.workflows.created_at IS 'When the first version was registered';
COMMENT ON COLUMN batchflow.workflows.updated_at IS 'When the newest version was registered';
COMMENT ON COLUMN batchflow.workflows.runs IS 'Runs of any version that you may see (purged runs are not counted)';
COMMENT ON COLUMN batchflow.workflows.last_run_at IS 'When the latest of those runs started';
GRANT SELECT ON batchflow.workflows TO PUBLIC;

-- Run control, part 2 (issue 14): bf_progress says 'paused' for a running
-- loop of a paused run; bf_summary keeps its failed attempts and last error
-- across history pruning (kept in loop_progress before the item errors are
-- deleted); the dashboard: a first line saying what is shown, running and
-- paused runs then the 20 that finished last, skipped items and the status
-- word in the bar line; with dependsOn's child runs (issue 16), each child
-- run right under its parent, indented, and the column parent_run (the view
-- is created here once, in its final form).

ALTER TABLE batchflow.loop_progress
    ADD COLUMN failed_attempts bigint CHECK (failed_attempts >= 0),
    ADD COLUMN last_error text;
COMMENT ON COLUMN batchflow.loop_progress.failed_attempts IS 'Failed attempts of the loop''s items, kept when the history retention deletes its item errors (NULL before)';
COMMENT ON COLUMN batchflow.loop_progress.last_error IS 'The loop''s last item error, kept when the history retention deletes its item errors (NULL before)';

CREATE OR REPLACE FUNCTION batchflow._prune_history(p_retention interval, p_batch int) RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
                                     '-infinity')
       -- Not past the start of any open transaction of this database: one
       -- of them may still close a run, whose finished_at (its clock, not
       -- its commit) is after its start.  So the watermark above never
       -- passes a run that is not visible yet.
       AND r.finished_at < (SELECT min(a.xact_start) FROM pg_catalog.pg_stat_activity a
                             WHERE a.datid = (SELECT d.oid FROM pg_catalog.pg_database d
                                               WHERE d.datname = pg_catalog.current_database())
                               AND a.backend_type <> 'autovacuum worker')
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

    -- Before the first deletion: keep what bf_summary reads of the errors.
    IF NOT EXISTS (SELECT 1 FROM batchflow.pruned_run p WHERE p.run_id = v_run) THEN
        UPDATE batchflow.loop_progress lp
           SET failed_attempts = e.n, last_error = e.last_error
          FROM (SELECT e.loop_ref, count(*) AS n,
                       (array_agg(e.error ORDER BY e.id DESC))[1] AS last_error
                  FROM batchflow.item_error e WHERE e.run_id = v_run
                 GROUP BY e.loop_ref) e
         WHERE lp.loop_ref = e.loop_ref;
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
REVOKE ALL ON FUNCTION batchflow._progress(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION batchflow._summary(p_run bigint)
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

DROP VIEW batchflow.dashboard;
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
GRANT SELECT ON batchflow.dashboard TO PUBLIC;

-- Announcements after the commit ------------------------------------------------
-- NOTIFY batchflow_progress is sent after the commit by one announcer per
-- database (src/announce.c, src/announcer.c), in commit order, instead of
-- by the transaction that made the change, which held PostgreSQL's notify
-- lock through its commit (sql/parts/41_progress_compute.sql).
-- _loop_created and _run_changed above already call batchflow._announce.
CREATE FUNCTION batchflow._announce(payload text) RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_announce';
COMMENT ON FUNCTION batchflow._announce(text) IS 'Internal: NOTIFY batchflow_progress with this payload after the commit, in commit order, sent by the database''s announcer';
REVOKE ALL ON FUNCTION batchflow._announce(text) FROM PUBLIC;

-- A loop changed status, closed or was re-opened.
CREATE OR REPLACE FUNCTION batchflow._loop_changed() RETURNS trigger
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
