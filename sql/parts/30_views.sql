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

CREATE VIEW batchflow.runs WITH (security_invoker = true) AS
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
COMMENT ON VIEW batchflow.runs IS 'One row per run you may see';
COMMENT ON COLUMN batchflow.runs.id IS 'Run id, as returned by bf_start';
COMMENT ON COLUMN batchflow.runs.workflow IS 'Workflow name';
COMMENT ON COLUMN batchflow.runs.version IS 'Version of the workflow the run executes';
COMMENT ON COLUMN batchflow.runs.status IS 'pending, running, paused, succeeded, failed or cancelled';
COMMENT ON COLUMN batchflow.runs.input IS 'Input passed to bf_start';
COMMENT ON COLUMN batchflow.runs.started_at IS 'When the run was started';
COMMENT ON COLUMN batchflow.runs.finished_at IS 'When the run finished';
COMMENT ON COLUMN batchflow.runs.error IS 'Why the run failed or was cancelled';
COMMENT ON COLUMN batchflow.runs.owner IS 'Role that started the run; activities run as this role';
COMMENT ON COLUMN batchflow.runs.current_node IS 'Index of the top-level node being executed';
COMMENT ON COLUMN batchflow.runs.vars IS 'Run variables: input keys and saved activity outputs';
COMMENT ON COLUMN batchflow.runs.parent_run IS 'For a child run started by a workflow activity: the run of the item that started it';

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
CREATE VIEW batchflow.items WITH (security_invoker = true) AS
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
