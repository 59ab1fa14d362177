/*
 * batchflow install script, part 10: schema, tables and their constraints.
 *
 * The tables hold everything the engine knows; nothing lives only in memory.
 * A workflow has versions; a run is one execution of a version; each node a
 * run reaches becomes one row in batchflow.loop (a loop container, or a
 * top-level activity, which is run as a one-item loop); each element of a
 * loop's input array becomes one row in batchflow.item.  Workers claim
 * pending items with FOR UPDATE SKIP LOCKED through item_claim_idx.
 */

\echo Use "CREATE EXTENSION batchflow" to load this file. \quit

CREATE SCHEMA batchflow;
COMMENT ON SCHEMA batchflow IS 'batchflow: workflows, runs, loops, items and their history';

-- Workflows -----------------------------------------------------------------

CREATE TABLE batchflow.workflow (
    name        text PRIMARY KEY
                CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$'),
    owner       oid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE batchflow.workflow IS 'One row per registered workflow name';
COMMENT ON COLUMN batchflow.workflow.name IS 'Unique workflow name, as passed to bf_register and bf_start';
COMMENT ON COLUMN batchflow.workflow.owner IS 'OID of the role that first registered the workflow; only it (or a superuser) may add versions';
COMMENT ON COLUMN batchflow.workflow.created_at IS 'When the first version was registered';

CREATE TABLE batchflow.workflow_version (
    id          serial PRIMARY KEY,
    workflow    text NOT NULL REFERENCES batchflow.workflow (name) ON DELETE CASCADE,
    version     int NOT NULL CHECK (version >= 1),
    definition  jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    owner       oid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow, version)
);
COMMENT ON TABLE batchflow.workflow_version IS 'Immutable, validated definitions; bf_register appends one, bf_start uses the newest';
COMMENT ON COLUMN batchflow.workflow_version.id IS 'Workflow version id, returned by bf_register';
COMMENT ON COLUMN batchflow.workflow_version.workflow IS 'Name of the workflow this is a version of';
COMMENT ON COLUMN batchflow.workflow_version.version IS 'Version number within the workflow, 1, 2, ...';
COMMENT ON COLUMN batchflow.workflow_version.definition IS 'The JSON definition, as validated by bf_register';
COMMENT ON COLUMN batchflow.workflow_version.owner IS 'OID of the role that registered this version';
COMMENT ON COLUMN batchflow.workflow_version.created_at IS 'When this version was registered';

-- Runs ----------------------------------------------------------------------

CREATE TABLE batchflow.run (
    id            bigserial PRIMARY KEY,
    version_id    int NOT NULL REFERENCES batchflow.workflow_version (id),
    owner         oid NOT NULL,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    input         jsonb NOT NULL DEFAULT '{}',
    vars          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(vars) = 'object'),
    outputs       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(outputs) = 'object'),
    current_node  int NOT NULL DEFAULT 0 CHECK (current_node >= 0),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error         text,
    CHECK ((finished_at IS NULL) = (status IN ('pending', 'running'))),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
COMMENT ON TABLE batchflow.run IS 'One row per execution of a workflow version (bf_start)';
COMMENT ON COLUMN batchflow.run.id IS 'Run id, returned by bf_start';
COMMENT ON COLUMN batchflow.run.version_id IS 'The workflow version this run executes; fixed at bf_start';
COMMENT ON COLUMN batchflow.run.owner IS 'OID of the role that called bf_start; every activity runs as this role';
COMMENT ON COLUMN batchflow.run.status IS 'pending, running, succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.run.input IS 'The input passed to bf_start';
COMMENT ON COLUMN batchflow.run.vars IS 'Variables: the keys of an object input, plus every activity output saved with "output"';
COMMENT ON COLUMN batchflow.run.outputs IS 'Result of every finished top-level activity, keyed by node id';
COMMENT ON COLUMN batchflow.run.current_node IS 'Index of the top-level node being executed';
COMMENT ON COLUMN batchflow.run.started_at IS 'When bf_start created the run';
COMMENT ON COLUMN batchflow.run.finished_at IS 'When the run reached a final status; NULL while pending or running';
COMMENT ON COLUMN batchflow.run.error IS 'Why the run failed or was cancelled';

CREATE INDEX run_active_idx ON batchflow.run (id) WHERE finished_at IS NULL;
CREATE INDEX run_finished_idx ON batchflow.run (finished_at) WHERE finished_at IS NOT NULL;

-- Loops ---------------------------------------------------------------------

CREATE TABLE batchflow.loop (
    id              bigserial PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES batchflow.run (id) ON DELETE CASCADE,
    node_index      int NOT NULL CHECK (node_index >= 0),
    node_id         text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('loop', 'activity')),
    node            jsonb NOT NULL,
    sequential      boolean NOT NULL,
    concurrency     int NOT NULL CHECK (concurrency BETWEEN 1 AND 10000),
    error_strategy  text NOT NULL DEFAULT 'fail-fast'
                    CHECK (error_strategy IN ('fail-fast', 'continue', 'retry')),
    max_retries     int NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    retry_delay_ms  int NOT NULL DEFAULT 1000 CHECK (retry_delay_ms >= 0),
    total           int NOT NULL CHECK (total >= 0),
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    error           text,
    UNIQUE (run_id, node_id),
    CHECK (NOT sequential OR concurrency = 1),
    CHECK (finished_at IS NULL OR status <> 'running')
);
COMMENT ON TABLE batchflow.loop IS 'One row per node a run has reached: a loop container, or a top-level activity run as a one-item loop';
COMMENT ON COLUMN batchflow.loop.id IS 'Internal loop key; items refer to it';
COMMENT ON COLUMN batchflow.loop.run_id IS 'The run this loop belongs to';
COMMENT ON COLUMN batchflow.loop.node_index IS 'Position of the node among the workflow''s top-level nodes';
COMMENT ON COLUMN batchflow.loop.node_id IS 'The node''s id in the definition; shown as loop_id in views';
COMMENT ON COLUMN batchflow.loop.kind IS 'loop (a loop container) or activity (a top-level activity)';
COMMENT ON COLUMN batchflow.loop.node IS 'The node''s definition; a top-level activity is its own single child';
COMMENT ON COLUMN batchflow.loop.sequential IS 'True for loopType sequential: items run one at a time in index order';
COMMENT ON COLUMN batchflow.loop.concurrency IS 'The cap: at no instant do more items of this loop execute';
COMMENT ON COLUMN batchflow.loop.error_strategy IS 'fail-fast, continue or retry';
COMMENT ON COLUMN batchflow.loop.max_retries IS 'For retry: how many times a failed item is tried again';
COMMENT ON COLUMN batchflow.loop.retry_delay_ms IS 'For retry: the first backoff delay; it doubles with every attempt';
COMMENT ON COLUMN batchflow.loop.total IS 'Number of items';
COMMENT ON COLUMN batchflow.loop.status IS 'running, succeeded, failed or cancelled; failed/cancelled stop new claims at once';
COMMENT ON COLUMN batchflow.loop.started_at IS 'When the run reached this node';
COMMENT ON COLUMN batchflow.loop.finished_at IS 'When the last item ended and the loop was closed; NULL while open';
COMMENT ON COLUMN batchflow.loop.error IS 'Why the loop failed';

CREATE INDEX loop_open_idx ON batchflow.loop (id) WHERE finished_at IS NULL;
CREATE INDEX loop_run_idx ON batchflow.loop (run_id, node_index);

-- Items ---------------------------------------------------------------------

CREATE TABLE batchflow.item (
    loop_ref     bigint NOT NULL,
    idx          int NOT NULL CHECK (idx >= 0),
    run_id       bigint NOT NULL,
    item         jsonb,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    attempts     int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    not_before   timestamptz,
    worker_pid   int,
    started_at   timestamptz,
    finished_at  timestamptz,
    output       jsonb,
    error        text,
    PRIMARY KEY (loop_ref, idx),
    CHECK ((finished_at IS NOT NULL) = (status IN ('succeeded', 'failed', 'skipped')))
);
COMMENT ON TABLE batchflow.item IS 'One row per element of a loop''s input array';
COMMENT ON COLUMN batchflow.item.loop_ref IS 'The loop (batchflow.loop.id) this item belongs to; items are deleted with their loop by trigger loop_delete_items';
COMMENT ON COLUMN batchflow.item.idx IS 'Index of the element in the input array, from 0';
COMMENT ON COLUMN batchflow.item.run_id IS 'The run, repeated from the loop for direct lookups';
COMMENT ON COLUMN batchflow.item.item IS 'The element itself; passed to SQL activities as $1';
COMMENT ON COLUMN batchflow.item.status IS 'pending, running, succeeded, failed or skipped';
COMMENT ON COLUMN batchflow.item.attempts IS 'How many times the item was executed';
COMMENT ON COLUMN batchflow.item.not_before IS 'For a retry: the item is not claimed again before this time';
COMMENT ON COLUMN batchflow.item.worker_pid IS 'For an item committed as running (HTTP activities): the worker process that holds it';
COMMENT ON COLUMN batchflow.item.started_at IS 'When the latest attempt started';
COMMENT ON COLUMN batchflow.item.finished_at IS 'When the item reached a final status';
COMMENT ON COLUMN batchflow.item.output IS 'Output of the last child activity';
COMMENT ON COLUMN batchflow.item.error IS 'Error of the latest failed attempt';

-- The claim: the next pending item of one loop, in index order.
CREATE INDEX item_claim_idx ON batchflow.item (loop_ref, idx) WHERE status IN ('pending', 'running');
-- A run's items in index order: keyset pages of batchflow.items (idx > n
-- ORDER BY idx LIMIT k) read k entries of it.
CREATE INDEX item_run_idx ON batchflow.item (run_id, idx, loop_ref);
-- The launcher's look for items of HTTP workers that died.
CREATE INDEX item_running_idx ON batchflow.item (worker_pid) WHERE status = 'running';

/*
 * item.loop_ref has no foreign key: items are only ever created by
 * batchflow._advance right after their loop, and a per-row foreign key
 * check costs more than the insert itself when bf_start fans out a million
 * items.  Deleting loops (directly, or by deleting their run) still deletes
 * their items, with one statement-level trigger instead of a cascade.
 */
CREATE FUNCTION batchflow._loop_delete_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM batchflow.item i USING gone g WHERE i.loop_ref = g.id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION batchflow._loop_delete_items() IS 'Internal: delete the items of deleted loops';
CREATE TRIGGER loop_delete_items AFTER DELETE ON batchflow.loop
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION batchflow._loop_delete_items();

CREATE TABLE batchflow.item_error (
    id         bigserial PRIMARY KEY,
    run_id     bigint NOT NULL,
    loop_ref   bigint NOT NULL,
    idx        int NOT NULL,
    attempt    int NOT NULL CHECK (attempt >= 1),
    sqlstate   text,
    error      text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (loop_ref, idx) REFERENCES batchflow.item (loop_ref, idx) ON DELETE CASCADE
);
COMMENT ON TABLE batchflow.item_error IS 'Every failed attempt of every item, kept for the error report';
COMMENT ON COLUMN batchflow.item_error.id IS 'Surrogate key';
COMMENT ON COLUMN batchflow.item_error.run_id IS 'The run';
COMMENT ON COLUMN batchflow.item_error.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.item_error.idx IS 'Index of the item';
COMMENT ON COLUMN batchflow.item_error.attempt IS 'Which attempt failed, from 1';
COMMENT ON COLUMN batchflow.item_error.sqlstate IS 'SQLSTATE of the error, when it came from SQL';
COMMENT ON COLUMN batchflow.item_error.error IS 'The error message';
COMMENT ON COLUMN batchflow.item_error.failed_at IS 'When the attempt failed';

CREATE INDEX item_error_item_idx ON batchflow.item_error (loop_ref, idx);
CREATE INDEX item_error_run_idx ON batchflow.item_error (run_id);

REVOKE ALL ON ALL TABLES IN SCHEMA batchflow FROM PUBLIC;
/*
 * batchflow install script, part 15: registering workflows.
 */

CREATE FUNCTION bf_register(name text, definition jsonb) RETURNS int
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_register';
COMMENT ON FUNCTION bf_register(text, jsonb) IS 'Validate a workflow definition and store it as the next version of the named workflow; returns the workflow version id';
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
LANGUAGE plpgsql AS $$
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
        v_limit := coalesce(nullif(current_setting('batchflow.max_items_per_run', true), '')::bigint,
                            10000000);
        v_total := n + (SELECT coalesce(sum(l.total), 0) FROM batchflow.loop l WHERE l.run_id = p_run);
        IF v_total > v_limit THEN
            v_msg := format('too many items for one run: node "%s" would bring the run to %s items',
                            v_node ->> 'id', v_total);
            v_detail := format('inputSource %s has %s items; the limit batchflow.max_items_per_run is %s items per run.',
                               v_srcname, n, v_limit);
            v_hint := 'Split the input over several runs, or have a superuser raise batchflow.max_items_per_run.';
        ELSE
            v_limit := pg_size_bytes(coalesce(nullif(current_setting('batchflow.max_item_size', true), ''),
                                              '16MB'));
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
COMMENT ON FUNCTION batchflow._advance(bigint, int) IS 'Internal: move a run to its next top-level node, creating that node''s loop and items';

/*
 * Close a loop whose items have all ended, and move its run on.  A failed
 * or cancelled loop first marks its pending items skipped (those a worker
 * holds are left to finish).  Returns true if this call closed the loop.
 * Safe to call any number of times from any number of sessions.
 */
CREATE FUNCTION batchflow._close_loop(p_loop bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
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
                   WHERE loop_ref = p_loop AND status IN ('pending', 'running')) THEN
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

CREATE FUNCTION bf_cancel(run bigint) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_cancel';
COMMENT ON FUNCTION bf_cancel(bigint) IS 'Stop claiming new items of a run, let in-flight items end, and mark the run cancelled';

CREATE FUNCTION bf_retry(run bigint) RETURNS bigint
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_retry';
COMMENT ON FUNCTION bf_retry(bigint) IS 'Re-queue the failed and skipped items of a finished run; returns how many';
/*
 * batchflow install script, part 30: the views users query.
 *
 * Every view shows a role only its own runs (the runs of roles whose
 * privileges it has), unless it is a superuser or a member of
 * batchflow_admin.  runs and items are security_invoker views over tables
 * protected by row-level security (part 60_security.sql); their WHERE
 * clause repeats the policy so that the view reads the same on its own.
 */

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchflow_admin') THEN
        CREATE ROLE batchflow_admin NOLOGIN;
    END IF;
END;
$$;

-- Whether the current user may see objects owned by role "owner": the owner
-- itself, roles with its privileges, superusers, members of batchflow_admin.
-- Written in C (bf_can_manage) because every row-level security policy of
-- part 60 calls it once per row.
CREATE FUNCTION batchflow.visible(owner oid) RETURNS boolean
    LANGUAGE C STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'bf_sql_visible';
COMMENT ON FUNCTION batchflow.visible(oid) IS 'True if the current user may see and control objects owned by the given role';

CREATE VIEW batchflow.runs AS
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
       r.vars
  FROM batchflow.run r
  JOIN batchflow.workflow_version v ON v.id = r.version_id
 WHERE batchflow.visible(r.owner);
COMMENT ON VIEW batchflow.runs IS 'One row per run you may see';
COMMENT ON COLUMN batchflow.runs.id IS 'Run id, as returned by bf_start';
COMMENT ON COLUMN batchflow.runs.workflow IS 'Workflow name';
COMMENT ON COLUMN batchflow.runs.version IS 'Version of the workflow the run executes';
COMMENT ON COLUMN batchflow.runs.status IS 'pending, running, succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.runs.input IS 'Input passed to bf_start';
COMMENT ON COLUMN batchflow.runs.started_at IS 'When the run was started';
COMMENT ON COLUMN batchflow.runs.finished_at IS 'When the run finished';
COMMENT ON COLUMN batchflow.runs.error IS 'Why the run failed or was cancelled';
COMMENT ON COLUMN batchflow.runs.owner IS 'Role that started the run; activities run as this role';
COMMENT ON COLUMN batchflow.runs.current_node IS 'Index of the top-level node being executed';
COMMENT ON COLUMN batchflow.runs.vars IS 'Run variables: input keys and saved activity outputs';

/*
 * An item a worker is executing stays 'pending' in batchflow.item (the
 * worker holds its row locked; only HTTP items are committed as
 * 'running'), so the view asks the workers' shared memory
 * (batchflow.active_items(), read once per query) about pending items,
 * and about them only.  l.run_id = i.run_id (true of every item) lets a
 * loop_id condition find its one loop through the unique key (run_id,
 * node_id) instead of every loop of that name.  The joins keep the order
 * of the item index, so a keyset page (run_id, loop_id, idx > n ORDER BY
 * idx LIMIT k) reads item_run_idx (run_id, idx, loop_ref) from n on and
 * stops after k rows of the loop.
 */
CREATE VIEW batchflow.items AS
SELECT i.run_id,
       l.node_id AS loop_id,
       i.idx,
       i.item,
       CASE WHEN a.pid IS NOT NULL THEN 'running' ELSE i.status END AS status,
       i.attempts,
       coalesce(a.started_at, i.started_at) AS started_at,
       i.finished_at,
       i.finished_at - i.started_at AS duration,
       i.output,
       i.error
  FROM batchflow.item i
  JOIN batchflow.loop l ON l.id = i.loop_ref AND l.run_id = i.run_id
  JOIN batchflow.run r ON r.id = i.run_id
  LEFT JOIN batchflow.active_items() a
         ON i.status = 'pending' AND a.loop_ref = i.loop_ref AND a.idx = i.idx
 WHERE batchflow.visible(r.owner);
COMMENT ON VIEW batchflow.items IS 'One row per item of the runs you may see; items executing right now show as running';
COMMENT ON COLUMN batchflow.items.run_id IS 'Run id';
COMMENT ON COLUMN batchflow.items.loop_id IS 'Id of the loop node in the workflow definition';
COMMENT ON COLUMN batchflow.items.idx IS 'Index of the item in the loop''s input array, from 0';
COMMENT ON COLUMN batchflow.items.item IS 'The item';
COMMENT ON COLUMN batchflow.items.status IS 'pending, running, succeeded, failed or skipped';
COMMENT ON COLUMN batchflow.items.attempts IS 'How many times the item was executed';
COMMENT ON COLUMN batchflow.items.started_at IS 'When the latest attempt started';
COMMENT ON COLUMN batchflow.items.finished_at IS 'When the item reached a final status';
COMMENT ON COLUMN batchflow.items.duration IS 'finished_at - started_at of the final attempt';
COMMENT ON COLUMN batchflow.items.output IS 'Output of the last child activity';
COMMENT ON COLUMN batchflow.items.error IS 'Error of the latest failed attempt';


GRANT SELECT ON batchflow.runs, batchflow.items TO PUBLIC;
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
/*
 * batchflow install script, part 50: starting runs from table triggers.
 *
 * batchflow.start_trigger is a ready-made row trigger function:
 *
 *   CREATE TRIGGER orders_ship AFTER INSERT ON orders
 *       FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger('ship_order');
 *
 * starts one run of workflow ship_order per inserted row, with the row as
 * the run's input.  bf_start is transactional, so the run exists only if
 * the statement's transaction commits.  The function is SECURITY INVOKER:
 * the run belongs to the role whose statement fired the trigger, exactly as
 * if that role had called bf_start itself, and that role must be allowed to
 * start the workflow.
 */

CREATE FUNCTION batchflow.start_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_workflow text;
    v_key      text := 'row';
    v_row      jsonb;
    v_input    jsonb;
BEGIN
    IF TG_LEVEL <> 'ROW' THEN
        RAISE EXCEPTION 'batchflow.start_trigger must be fired FOR EACH ROW'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('Trigger "%s" on table %I.%I is a statement-level trigger.',
                                  TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME),
                  HINT = 'Recreate the trigger with FOR EACH ROW.';
    END IF;
    IF TG_NARGS < 1 OR TG_NARGS > 2 OR TG_ARGV[0] IS NULL OR TG_ARGV[0] = '' THEN
        RAISE EXCEPTION 'batchflow.start_trigger needs a workflow name as its first argument'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Trigger "%s" on table %I.%I passes %s argument(s).',
                                  TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_NARGS),
                  HINT = 'Write EXECUTE FUNCTION batchflow.start_trigger(''workflow'') or batchflow.start_trigger(''workflow'', ''input_key'').';
    END IF;
    v_workflow := TG_ARGV[0];
    IF TG_NARGS = 2 THEN
        v_key := TG_ARGV[1];
        IF v_key !~ '^[A-Za-z_][A-Za-z0-9_-]{0,62}$' OR v_key = 'trigger' THEN
            RAISE EXCEPTION 'batchflow.start_trigger: invalid input key "%"', v_key
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Trigger "%s" on table %I.%I names the key "%s".',
                                      TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME, v_key),
                      HINT = 'The key must be a valid variable name (a letter or _, then letters, digits, _ or -, at most 63 characters) other than "trigger".';
        END IF;
    END IF;

    IF TG_OP = 'DELETE' THEN
        v_row := to_jsonb(OLD);
    ELSE
        v_row := to_jsonb(NEW);
    END IF;

    v_input := jsonb_build_object(
        v_key, v_row,
        'trigger', jsonb_build_object('table', format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME),
                                      'operation', TG_OP,
                                      'name', TG_NAME));
    PERFORM @extschema@.bf_start(v_workflow, v_input);

    -- The row goes on unchanged (this matters only for a BEFORE trigger).
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION batchflow.start_trigger() IS
'Row trigger function: batchflow.start_trigger(''workflow'' [, ''key'']) starts a run of the workflow for each row, with input {"<key>": row, "trigger": {"table", "operation", "name"}}; key defaults to "row"; the row is NEW (OLD for DELETE); transactional, runs as the role whose statement fired it';
/*
 * batchflow install script, part 60: isolation between roles.
 *
 * Every table is readable by every role that has USAGE on schema batchflow,
 * and row-level security shows each role only the rows of its own
 * workflows and runs: those whose owner column is the role itself or a
 * role whose privileges it has.  Superusers bypass row-level security and
 * see everything; members of the role batchflow_admin (created by part 30
 * if it does not exist yet) see everything through the policies.  The
 * background workers connect as the bootstrap superuser, and the bf_*
 * functions write as the extension owner, who owns the tables: neither is
 * subject to the policies.
 *
 * Ordinary roles get SELECT only; every write goes through the bf_*
 * functions, which check ownership themselves (42501 for another role's
 * run).  So the only grant a role needs is
 *     GRANT USAGE ON SCHEMA batchflow TO alice;
 *
 * Tables that have no owner column of their own (loop, item, item_error,
 * the progress tables) follow their run: "run_id IN (SELECT id FROM
 * batchflow.run)" is evaluated with the policy of batchflow.run, and runs
 * as one hashed subplan per query rather than one lookup per row.
 */

-- Workflows and runs: keyed on their owner column.
ALTER TABLE batchflow.workflow ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_owner ON batchflow.workflow
    FOR SELECT USING (batchflow.visible(owner));

ALTER TABLE batchflow.workflow_version ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_version_owner ON batchflow.workflow_version
    FOR SELECT USING (batchflow.visible(owner));

ALTER TABLE batchflow.run ENABLE ROW LEVEL SECURITY;
CREATE POLICY run_owner ON batchflow.run
    FOR SELECT USING (batchflow.visible(owner));

-- Everything below a run: visible when its run is.
ALTER TABLE batchflow.loop ENABLE ROW LEVEL SECURITY;
CREATE POLICY loop_run_owner ON batchflow.loop
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.item ENABLE ROW LEVEL SECURITY;
CREATE POLICY item_run_owner ON batchflow.item
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.item_error ENABLE ROW LEVEL SECURITY;
CREATE POLICY item_error_run_owner ON batchflow.item_error
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.loop_progress ENABLE ROW LEVEL SECURITY;
CREATE POLICY loop_progress_run_owner ON batchflow.loop_progress
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

ALTER TABLE batchflow.progress_counter ENABLE ROW LEVEL SECURITY;
CREATE POLICY progress_counter_run_owner ON batchflow.progress_counter
    FOR SELECT USING (loop_ref IN (SELECT l.id FROM batchflow.loop l));

ALTER TABLE batchflow.pruned_run ENABLE ROW LEVEL SECURITY;
CREATE POLICY pruned_run_run_owner ON batchflow.pruned_run
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));

GRANT SELECT ON batchflow.workflow, batchflow.workflow_version, batchflow.run,
    batchflow.loop, batchflow.item, batchflow.item_error, batchflow.loop_progress,
    batchflow.progress_counter, batchflow.pruned_run TO PUBLIC;

/*
 * runs and items read the tables with the rights of the role querying them,
 * so the policies above apply to them as to the tables.
 *
 * The progress views compute their rows from several tables and shared
 * memory with their owner's rights and filter with batchflow.visible();
 * security_barrier makes that filter run before any condition of the
 * querying role, so a function of that role (say, one that raises a NOTICE
 * with its argument) never sees another role's rows.
 */
ALTER VIEW batchflow.runs SET (security_invoker = true);
ALTER VIEW batchflow.items SET (security_invoker = true);
ALTER VIEW batchflow.progress SET (security_barrier = true);
ALTER VIEW batchflow.dashboard SET (security_barrier = true);
ALTER VIEW batchflow.loop_stats SET (security_barrier = true);
ALTER VIEW batchflow.stuck_runs SET (security_barrier = true);

/*
 * The internal PL/pgSQL functions (batchflow._*) run as the extension owner
 * or a worker, which pin search_path themselves; pinning it on the
 * functions as well means that no caller's search_path ever decides which
 * function or operator they call.  (The SQL ones are left alone so that
 * they can still be inlined.)
 */
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid
               FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
              WHERE p.pronamespace = 'batchflow'::regnamespace
                AND p.proname LIKE '\_%' AND l.lanname = 'plpgsql' AND p.proconfig IS NULL
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$$;
