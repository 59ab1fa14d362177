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
