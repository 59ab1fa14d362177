/*
 * batchflow install script, part 25: waking only the workers new work can
 * use.
 *
 * A transaction that creates an open loop (bf_start, a run reaching its
 * next node) asks, through this trigger, for min(items, cap) idle workers
 * (one for a sequential loop) to be woken when it commits; see
 * src/wakeup.c.  The trigger only reads the new row.
 */
CREATE FUNCTION batchflow._loop_wake() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'bf_sql_loop_wake';
COMMENT ON FUNCTION batchflow._loop_wake() IS 'Internal: at commit, wake as many idle workers as a new loop can use';
REVOKE ALL ON FUNCTION batchflow._loop_wake() FROM PUBLIC;

CREATE TRIGGER loop_wake AFTER INSERT ON batchflow.loop
    FOR EACH ROW WHEN (NEW.finished_at IS NULL)
    EXECUTE FUNCTION batchflow._loop_wake();
COMMENT ON TRIGGER loop_wake ON batchflow.loop IS 'Wakes min(items, cap) idle workers when the transaction that created the loop commits';
