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
COMMENT ON COLUMN batchflow.workflow.owner IS 'OID of the role that first registered the workflow; it, the roles with its privileges, members of batchflow_admin and superusers may add versions';
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
                  CHECK (status IN ('pending', 'running', 'paused', 'succeeded', 'failed', 'cancelled')),
    input         jsonb NOT NULL DEFAULT '{}',
    vars          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(vars) = 'object'),
    outputs       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(outputs) = 'object'),
    current_node  int NOT NULL DEFAULT 0 CHECK (current_node >= 0),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error         text,
    CHECK ((finished_at IS NULL) = (status IN ('pending', 'running', 'paused'))),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
COMMENT ON TABLE batchflow.run IS 'One row per execution of a workflow version (bf_start)';
COMMENT ON COLUMN batchflow.run.id IS 'Run id, returned by bf_start';
COMMENT ON COLUMN batchflow.run.version_id IS 'The workflow version this run executes; fixed at bf_start';
COMMENT ON COLUMN batchflow.run.owner IS 'OID of the role that called bf_start; every activity runs as this role';
COMMENT ON COLUMN batchflow.run.status IS 'pending, running, paused (bf_pause: no new item starts), succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.run.input IS 'The input passed to bf_start';
COMMENT ON COLUMN batchflow.run.vars IS 'Variables: the keys of an object input, plus every activity output saved with "output"';
COMMENT ON COLUMN batchflow.run.outputs IS 'Result of every finished top-level activity, keyed by node id';
COMMENT ON COLUMN batchflow.run.current_node IS 'Index of the top-level node being executed';
COMMENT ON COLUMN batchflow.run.started_at IS 'When bf_start created the run';
COMMENT ON COLUMN batchflow.run.finished_at IS 'When the run reached a final status; NULL while pending, running or paused';
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
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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

-- The settings' defaults live in C only: SQL reads them through this.
CREATE FUNCTION batchflow._setting(name text) RETURNS text
    LANGUAGE C STABLE STRICT AS 'MODULE_PATHNAME', 'bf_sql_setting';
COMMENT ON FUNCTION batchflow._setting(text) IS 'Internal: the current value of a batchflow setting (loading the library defines every setting with its default)';
