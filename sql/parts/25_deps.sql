/*
 * batchflow install script, part 25: dependencies between the items of a
 * loop ("dependsOn").
 *
 * Readiness is kept per item, never computed by a scan, and out of the
 * item rows: batchflow.item_dep holds one row per edge, keyed by the
 * dependency; batchflow.item_ready one row per item of the loop that may
 * be claimed (all its dependencies succeeded), which the claim reads in
 * index order; batchflow.item_wait the count of dependencies still to
 * succeed of each item that waits for more than one.  When an item
 * succeeds, its worker, in the item's own transaction (src/deps.c),
 * deletes its ready row, counts down the wait rows of its dependents and
 * inserts a ready row for each dependent whose last dependency it was: an
 * item with one dependency has no wait row and is made ready directly.
 * The item rows are not written for any of this: an UPDATE of a wide,
 * many times indexed item row cost more than the insert of a narrow one.
 * Items of loops without dependsOn have item.unmet NULL and are in none
 * of these tables.
 */

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
