/*
 * batchflow install script, part 70: backups.
 *
 * pg_dump leaves out the rows of an extension's tables unless the tables
 * are marked with pg_extension_config_dump; marked, their rows (and the
 * values of the marked sequences) are dumped like a user table's, and
 * pg_restore puts them back after its CREATE EXTENSION.  Every table and
 * sequence of batchflow is marked, with no filter: the install script
 * creates no row of its own, so every row is the user's state.
 *
 * A restore loads the rows with COPY (or INSERT, for a dump taken with
 * --inserts) while the extension's triggers are in place.  Two of them
 * must not act on restored rows:
 *   - batchflow._loop_created, which starts the progress row of a new loop:
 *     the dump carries that row itself, loaded right after the loops;
 *   - a restored 'live' progress row may lag behind its items (workers
 *     write their counters in batches), so it arrives as 'recount', and
 *     counts are taken from the items until the next sweep rebuilds them.
 * Items that were executing when the dump was taken come back 'pending'
 * (their claim had not committed), or, for HTTP items, 'running' with the
 * pid of a process of the dumped server: workers re-queue those (see
 * docs/operations.md).
 */

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
-- Big batches (part 25): how far each loop's materialisation got.
SELECT pg_catalog.pg_extension_config_dump('batchflow.loop_fill', '');

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
