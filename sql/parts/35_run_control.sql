/*
 * batchflow install script, part 35: run control and the workflow catalog.
 *
 * bf_pause and bf_resume hold back and release a run (status 'paused': the
 * workers leave its loops out of their claims, items already executing
 * finish); bf_purge deletes old finished runs (the launcher does the same
 * with batchflow.run_retention); bf_unregister removes a workflow with its
 * versions and finished runs.  bf_cancel(run, force) is in part 20.  Like
 * the other bf_* functions they are written in C (src/run_control.c): they
 * check the caller's right to each run or workflow and write as the
 * extension owner.  batchflow.workflows lists the workflows a role may see.
 */

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
