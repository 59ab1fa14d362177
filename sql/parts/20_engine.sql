/*
 * batchflow install script, part 20: the engine's SQL side.
 *
 * Advancing a run from node to node and closing a loop are set-based
 * bookkeeping, so they are written in PL/pgSQL and called by bf_start, the
 * workers, bf_retry and bf_cancel.  They run as the extension owner and are
 * not callable by ordinary roles.  The user-facing bf_* functions are C
 * functions that record the caller as owner before switching to the
 * extension owner for these writes.
 */

-- Hooks into the C side: wake the workers / bf_wait sleepers at commit.
CREATE FUNCTION batchflow._wake_on_commit() RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_wake_on_commit';
COMMENT ON FUNCTION batchflow._wake_on_commit() IS 'Internal: wake the item workers when this transaction commits';

CREATE FUNCTION batchflow._run_finished_on_commit() RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_run_finished_on_commit';
COMMENT ON FUNCTION batchflow._run_finished_on_commit() IS 'Internal: wake bf_wait callers when this transaction commits';

CREATE FUNCTION batchflow.active_items(
    OUT pid int, OUT run_id bigint, OUT loop_ref bigint, OUT idx int, OUT started_at timestamptz)
    RETURNS SETOF record
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_active_items';
COMMENT ON FUNCTION batchflow.active_items() IS 'Items executing right now, one row per busy worker, read from shared memory';

/*
 * Diagnostic and testing entry point: claim the next item of one loop the
 * way a worker does (a free slot under the loop's cap, then the next
 * pending item with FOR UPDATE SKIP LOCKED) and hold both until the
 * caller's transaction ends.  The isolation tests race sessions through it.
 */
CREATE FUNCTION batchflow.claim_item(loop_ref bigint) RETURNS int
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_claim_item';
COMMENT ON FUNCTION batchflow.claim_item(bigint) IS 'Diagnostics: claim the next item of a loop like a worker (slot under the cap + FOR UPDATE SKIP LOCKED), hold it until the transaction ends, return its index or NULL';
REVOKE ALL ON FUNCTION batchflow.claim_item(bigint) FROM PUBLIC;

/*
 * Create the loop row (and its items) for top-level node k of a run, or
 * finish the run when k is past the last node.  Nodes whose input is an
 * empty array complete at once and the run moves on.  An input source that
 * is not an array fails the run with an error that names the source.
 */
CREATE FUNCTION batchflow._advance(p_run bigint, p_from int) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r        record;
    v_nodes    jsonb;
    v_node     jsonb;
    k        int := p_from;
    v_src      jsonb;
    v_arr      jsonb;
    v_srcname  text;
    n        int;
    v_strategy text;
    v_lid      bigint;
    v_existing record;
    v_reached  timestamptz;
    v_limit    bigint;
    v_total    bigint;
    v_big      record;
    v_unmet    int[];
    v_msg      text;
    v_detail   text;
    v_hint     text;
BEGIN
    SELECT run.*, v.definition INTO r
      FROM batchflow.run JOIN batchflow.workflow_version v ON v.id = run.version_id
     WHERE run.id = p_run
       FOR UPDATE OF run;
    IF NOT FOUND OR r.finished_at IS NOT NULL THEN
        RETURN;
    END IF;
    v_nodes := r.definition -> 'nodes';

    LOOP
        IF k >= jsonb_array_length(v_nodes) THEN
            UPDATE batchflow.run
               SET status = 'succeeded', finished_at = clock_timestamp(), current_node = k
             WHERE id = p_run;
            PERFORM batchflow._run_finished_on_commit();
            RETURN;
        END IF;

        v_node := v_nodes -> k;

        -- Reached before (bf_retry re-opened an earlier loop): skip or wait.
        SELECT id, finished_at INTO v_existing
          FROM batchflow.loop WHERE run_id = p_run AND node_id = v_node ->> 'id';
        IF FOUND THEN
            IF v_existing.finished_at IS NULL THEN
                UPDATE batchflow.run SET current_node = k WHERE id = p_run;
                RETURN;
            END IF;
            k := k + 1;
            CONTINUE;
        END IF;

        IF v_node ->> 'type' = 'activity' THEN
            INSERT INTO batchflow.loop (run_id, node_index, node_id, kind, node,
                                        sequential, concurrency, total, started_at)
            VALUES (p_run, k, v_node ->> 'id', 'activity', v_node, true, 1, 1,
                    clock_timestamp())
            RETURNING id INTO v_lid;
            INSERT INTO batchflow.item (loop_ref, idx, run_id, item)
            VALUES (v_lid, 0, p_run, NULL);
            UPDATE batchflow.run SET current_node = k WHERE id = p_run;
            PERFORM batchflow._wake_on_commit();
            RETURN;
        END IF;

        -- A loop: resolve its input source now that it is reached.
        v_src := v_node -> 'inputSource';
        IF v_src ? 'static' THEN
            v_arr := v_src -> 'static';
            v_srcname := 'static';
        ELSIF v_src ? 'variable' THEN
            v_arr := r.vars -> (v_src ->> 'variable');
            v_srcname := format('variable "%s"', v_src ->> 'variable');
        ELSE
            v_arr := r.outputs -> (v_src ->> 'activity');
            v_srcname := format('activity "%s"', v_src ->> 'activity');
        END IF;

        IF v_arr IS NULL OR jsonb_typeof(v_arr) = 'null' THEN
            v_arr := '[]';
        ELSIF jsonb_typeof(v_arr) <> 'array' THEN
            UPDATE batchflow.run
               SET status = 'failed', finished_at = clock_timestamp(), current_node = k,
                   error = format('node "%s": inputSource %s is a JSON %s, not an array',
                                  v_node ->> 'id', v_srcname, jsonb_typeof(v_arr))
             WHERE id = p_run;
            PERFORM batchflow._run_finished_on_commit();
            RETURN;
        END IF;

        n := jsonb_array_length(v_arr);

        /*
         * The limits: batchflow.max_items_per_run over all the run's loops,
         * batchflow.max_item_size for each item (only looked for when the
         * whole array is larger than the limit).  Reached by bf_start
         * (p_from = 0), a limit is an error of bf_start and nothing is
         * created; reached later by a worker, it fails the run.
         */
        v_msg := NULL;
        v_limit := batchflow._setting('batchflow.max_items_per_run')::bigint;
        v_total := n + (SELECT coalesce(sum(l.total), 0) FROM batchflow.loop l WHERE l.run_id = p_run);
        IF v_total > v_limit THEN
            v_msg := format('too many items for one run: node "%s" would bring the run to %s items',
                            v_node ->> 'id', v_total);
            v_detail := format('inputSource %s has %s items; the limit batchflow.max_items_per_run is %s items per run.',
                               v_srcname, n, v_limit);
            v_hint := 'Split the input over several runs, or have a superuser raise batchflow.max_items_per_run.';
        ELSE
            v_limit := pg_size_bytes(batchflow._setting('batchflow.max_item_size'));
            IF pg_column_size(v_arr) > v_limit THEN
                SELECT (e.ord - 1)::int AS idx, pg_column_size(e.value) AS size INTO v_big
                  FROM jsonb_array_elements(v_arr) WITH ORDINALITY AS e(value, ord)
                 WHERE pg_column_size(e.value) > v_limit
                 LIMIT 1;
                IF FOUND THEN
                    v_msg := format('item %s of node "%s" is too large', v_big.idx, v_node ->> 'id');
                    v_detail := format('The item from inputSource %s takes %s bytes; the limit batchflow.max_item_size is %s.',
                                       v_srcname, v_big.size, pg_size_pretty(v_limit));
                    v_hint := 'Pass large data by reference (a key or a URL) instead of inside the item, or have a superuser raise batchflow.max_item_size.';
                END IF;
            END IF;
        END IF;
        IF v_msg IS NOT NULL THEN
            IF p_from = 0 THEN
                RAISE EXCEPTION '%', v_msg
                    USING ERRCODE = 'program_limit_exceeded', DETAIL = v_detail, HINT = v_hint;
            END IF;
            UPDATE batchflow.run
               SET status = 'failed', finished_at = clock_timestamp(), current_node = k,
                   error = format('%s: %s %s', v_msg, v_detail, v_hint)
             WHERE id = p_run;
            PERFORM batchflow._run_finished_on_commit();
            RETURN;
        END IF;

        -- Query, keyRanges and large arrays: the workers materialise the items.
        IF batchflow._lazy_loop(p_run, k, v_node, n, r.owner, p_from = 0) THEN
            RETURN;
        END IF;

        -- Not now(): the previous node ended earlier in this transaction.
        v_reached := clock_timestamp();
        v_strategy := coalesce(v_node ->> 'errorStrategy', 'fail-fast');
        INSERT INTO batchflow.loop (run_id, node_index, node_id, kind, node, sequential,
                                    concurrency, error_strategy, max_retries,
                                    retry_delay_ms, total, status, started_at, finished_at)
        VALUES (p_run, k, v_node ->> 'id', 'loop', v_node,
                v_node ->> 'loopType' = 'sequential',
                coalesce((v_node ->> 'concurrency')::int, 1),
                v_strategy,
                coalesce((v_node ->> 'maxRetries')::int,
                         CASE WHEN v_strategy = 'retry' THEN 3 ELSE 0 END),
                coalesce((v_node ->> 'retryDelayMs')::int, 1000),
                n,
                CASE WHEN n = 0 THEN 'succeeded' ELSE 'running' END,
                v_reached,
                CASE WHEN n = 0 THEN v_reached END)
        RETURNING id INTO v_lid;

        IF n = 0 THEN
            k := k + 1;
            CONTINUE;
        END IF;

        -- dependsOn: check the graph, record its edges, count each item's
        -- dependencies (part 25); NULL: refused, the run is failed.
        v_unmet := NULL;
        IF v_node ? 'dependsOn' THEN
            v_unmet := batchflow._deps_start(p_run, v_lid, v_node, v_arr, p_from);
            IF v_unmet IS NULL THEN
                RETURN;
            END IF;
        END IF;
        INSERT INTO batchflow.item (loop_ref, idx, run_id, item, unmet)
        SELECT v_lid, (e.ord - 1)::int, p_run, e.value, v_unmet[e.ord]
          FROM jsonb_array_elements(v_arr) WITH ORDINALITY AS e(value, ord);
        UPDATE batchflow.run SET current_node = k WHERE id = p_run;
        PERFORM batchflow._wake_on_commit();
        RETURN;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION batchflow._advance(bigint, int) IS 'Internal: move a run to its next top-level node, creating that node''s loop and items';

/*
 * Close a loop whose items have all ended, and move its run on.  A failed
 * or cancelled loop first marks its pending items skipped (those a worker
 * holds are left to finish).  Returns true if this call closed the loop.
 * Safe to call any number of times from any number of sessions.
 */
CREATE FUNCTION batchflow._close_loop(p_loop bigint) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l record;
BEGIN
    SELECT status, finished_at INTO l FROM batchflow.loop WHERE id = p_loop;
    IF NOT FOUND OR l.finished_at IS NOT NULL THEN
        RETURN false;
    END IF;

    IF l.status IN ('failed', 'cancelled') THEN
        UPDATE batchflow.item i
           SET status = 'skipped', finished_at = clock_timestamp(), not_before = NULL
          FROM (SELECT loop_ref, idx FROM batchflow.item
                 WHERE loop_ref = p_loop AND status = 'pending'
                   FOR UPDATE SKIP LOCKED) s
         WHERE i.loop_ref = s.loop_ref AND i.idx = s.idx;
    END IF;

    SELECT * INTO l FROM batchflow.loop WHERE id = p_loop FOR UPDATE;
    IF l.finished_at IS NOT NULL
       OR EXISTS (SELECT 1 FROM batchflow.item
                   WHERE loop_ref = p_loop AND status IN ('pending', 'running'))
       -- still materialising its items (part 25)
       OR (l.status = 'running'
           AND EXISTS (SELECT 1 FROM batchflow.loop_fill WHERE loop_ref = p_loop)) THEN
        RETURN false;
    END IF;

    UPDATE batchflow.loop
       SET finished_at = clock_timestamp(),
           status = CASE WHEN status = 'running' THEN 'succeeded' ELSE status END
     WHERE id = p_loop;

    IF l.status = 'failed' THEN
        UPDATE batchflow.run
           SET status = 'failed', finished_at = clock_timestamp(),
               error = coalesce(l.error, format('loop "%s" failed', l.node_id))
         WHERE id = l.run_id AND finished_at IS NULL;
        PERFORM batchflow._run_finished_on_commit();
    ELSIF l.status = 'cancelled' THEN
        UPDATE batchflow.run
           SET status = 'cancelled', finished_at = clock_timestamp(),
               error = coalesce(l.error, 'cancelled')
         WHERE id = l.run_id AND finished_at IS NULL;
        PERFORM batchflow._run_finished_on_commit();
    ELSE
        PERFORM batchflow._advance(l.run_id, l.node_index + 1);
    END IF;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION batchflow._close_loop(bigint) IS 'Internal: close a loop whose items have all ended and advance its run';

REVOKE ALL ON FUNCTION batchflow._wake_on_commit(), batchflow._run_finished_on_commit(),
    batchflow._advance(bigint, int), batchflow._close_loop(bigint) FROM PUBLIC;

-- The user-facing API ---------------------------------------------------------

CREATE FUNCTION bf_start(workflow text, input jsonb DEFAULT '{}') RETURNS bigint
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_start';
COMMENT ON FUNCTION bf_start(text, jsonb) IS 'Start a run of the newest version of a workflow; the run exists only if the calling transaction commits';

CREATE FUNCTION bf_wait(run bigint, timeout interval DEFAULT '10 minutes') RETURNS text
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_wait';
COMMENT ON FUNCTION bf_wait(bigint, interval) IS 'Block until the run is finished or the timeout passes; returns the run''s status';

CREATE FUNCTION bf_cancel(run bigint, force boolean DEFAULT false) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_cancel';
COMMENT ON FUNCTION bf_cancel(bigint, boolean) IS 'Stop claiming new items of a run and mark it cancelled; in-flight items end, or with force are interrupted (rolled back, skipped with error cancelled)';

CREATE FUNCTION bf_retry(run bigint) RETURNS bigint
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_retry';
COMMENT ON FUNCTION bf_retry(bigint) IS 'Re-queue the failed and skipped items of a finished run; returns how many';
