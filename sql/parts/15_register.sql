/*
 * batchflow install script, part 15: registering workflows.
 */

CREATE FUNCTION bf_register(name text, definition jsonb) RETURNS int
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'bf_register';
COMMENT ON FUNCTION bf_register(text, jsonb) IS 'Validate a workflow definition and store it as the next version of the named workflow; returns the workflow version id';
