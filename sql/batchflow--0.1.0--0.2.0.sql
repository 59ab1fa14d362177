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

-- Settings: SQL reads batchflow's settings through batchflow._setting(),
-- which loads the library (defining every setting with its default), instead
-- of current_setting(name, true) with the C defaults repeated as literals
-- (_advance: max_items_per_run, max_item_size; stuck_runs: stalled_after,
-- slow_item_factor).
CREATE FUNCTION batchflow._setting(name text) RETURNS text
    LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'bf_sql_setting';
COMMENT ON FUNCTION batchflow._setting(text) IS 'Internal: the current value of a batchflow setting (loading the library defines every setting with its default)';

CREATE OR REPLACE FUNCTION batchflow._advance(p_run bigint, p_from int) RETURNS void
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

        INSERT INTO batchflow.item (loop_ref, idx, run_id, item)
        SELECT v_lid, (e.ord - 1)::int, p_run, e.value
          FROM jsonb_array_elements(v_arr) WITH ORDINALITY AS e(value, ord);
        UPDATE batchflow.run SET current_node = k WHERE id = p_run;
        PERFORM batchflow._wake_on_commit();
        RETURN;
    END LOOP;
END;
$$;

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
