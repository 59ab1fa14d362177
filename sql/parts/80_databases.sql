/*
 * batchflow install script, part 80: telling the workers.
 *
 * The pool serves every database in which the extension is installed (or
 * the one batchflow.database_name names).  The last statement of the
 * install (and of every upgrade) script tells the launcher, when the
 * transaction commits, that this database has the extension now, so that
 * a worker is there at once; in a database no worker serves it raises a
 * WARNING instead (docs/operations.md).
 */

CREATE FUNCTION batchflow._database_ready() RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_sql_database_ready';
COMMENT ON FUNCTION batchflow._database_ready() IS 'Internal: at commit, tell the workers that this database has the extension (or warn that none serves it)';
REVOKE ALL ON FUNCTION batchflow._database_ready() FROM PUBLIC;

SELECT batchflow._database_ready();
