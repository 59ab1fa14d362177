/*
 * batchflow install script, part 26: child workflows, the activity
 * {"activity": "workflow", "workflow": "name", "input": {...}}.
 *
 * A worker that claims such an item starts a child run of the named
 * workflow (run.parent_run = the item's run), records it in
 * item.child_run, sets the item 'running' and commits: the item then holds
 * no worker and no transaction while the child runs.  The transaction that
 * gives the child run its final status completes the parent item, by the
 * trigger run_child_ended below, following the parent loop's error
 * strategy.  The cap of the parent loop counts its items in flight with a
 * child (status 'running'): claims of such a loop are serialised on one
 * slot lock and start a child only while fewer than the cap are running
 * (src/activity_workflow.c).
 */

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
