/*
 * batchflow install script, part 25: big batches.
 *
 * A loop fed by {"query": ...}, by {"keyRanges": {...}}, or by a JSON array
 * of at least batchflow._lazy_threshold() elements (without dependsOn, whose
 * graph is checked over all the items at the start) is created without its
 * items: batchflow._lazy_loop (called by _advance when the run reaches the
 * loop) inserts the loop row and one batchflow.loop_fill row, and the item
 * workers materialise the items behind it in chunks, each chunk in a
 * transaction of its own (src/source_fill.c).  While the loop_fill row
 * exists the loop is not finished, whatever its items say: _close_loop
 * refuses to close it.  The row records how far materialisation got, so a
 * crash resumes it without duplicates or gaps; it is deleted with the last
 * chunk, or when the loop is stopped.
 */

CREATE TABLE batchflow.loop_fill (
    loop_ref    bigint PRIMARY KEY REFERENCES batchflow.loop (id) ON DELETE CASCADE,
    run_id      bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('query', 'array', 'keyRanges')),
    source      jsonb NOT NULL CHECK (jsonb_typeof(source) = 'object'),
    next_idx    int NOT NULL DEFAULT 0 CHECK (next_idx >= 0),
    next_key    text,
    next_from   jsonb,
    estimate    float8,
    started_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE batchflow.loop_fill IS 'One row per loop whose items are still being materialised by the workers (query, keyRanges and large array sources)';
COMMENT ON COLUMN batchflow.loop_fill.loop_ref IS 'The loop (batchflow.loop.id)';
COMMENT ON COLUMN batchflow.loop_fill.run_id IS 'The run, repeated from the loop';
COMMENT ON COLUMN batchflow.loop_fill.kind IS 'query, array or keyRanges';
COMMENT ON COLUMN batchflow.loop_fill.source IS 'What to materialise: {"query"}, {"from", "name"} of an array, or the resolved key ranges scan';
COMMENT ON COLUMN batchflow.loop_fill.next_idx IS 'Items materialised so far: the index of the next one';
COMMENT ON COLUMN batchflow.loop_fill.next_key IS 'keyRanges: the first key of the next range, as text; NULL before the first';
COMMENT ON COLUMN batchflow.loop_fill.next_from IS 'keyRanges: the first key of the next range, as jsonb';
COMMENT ON COLUMN batchflow.loop_fill.estimate IS 'Expected number of items: the planner''s row estimate of a query, the length of an array';
COMMENT ON COLUMN batchflow.loop_fill.started_at IS 'When the loop started';

ALTER TABLE batchflow.loop_fill ENABLE ROW LEVEL SECURITY;
CREATE POLICY loop_fill_run_owner ON batchflow.loop_fill
    FOR SELECT USING (run_id IN (SELECT r.id FROM batchflow.run r));
REVOKE ALL ON batchflow.loop_fill FROM PUBLIC;
GRANT SELECT ON batchflow.loop_fill TO PUBLIC;

/*
 * A run's input is stored as it came (input) and as its first variables
 * (vars): a 1,000,000-element array is two ~10 MB values, which pglz took
 * ~2 s to compress in bf_start.  lz4, when the server has it, takes
 * milliseconds.
 */
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE batchflow.run ALTER COLUMN input SET COMPRESSION lz4,
                                  ALTER COLUMN vars SET COMPRESSION lz4,
                                  ALTER COLUMN outputs SET COMPRESSION lz4;
    END IF;
END
$$;

-- Arrays of at least this many elements are materialised by the workers.
CREATE FUNCTION batchflow._lazy_threshold() RETURNS int
    LANGUAGE sql IMMUTABLE AS 'SELECT 10000';
COMMENT ON FUNCTION batchflow._lazy_threshold() IS 'Internal: JSON arrays of at least this many elements are materialised by the workers, in chunks, behind bf_start';

CREATE FUNCTION batchflow._loop_throttled(loop_ref bigint) RETURNS boolean
    LANGUAGE C VOLATILE STRICT AS 'MODULE_PATHNAME', 'bf_loop_throttled';
COMMENT ON FUNCTION batchflow._loop_throttled(bigint) IS 'Internal: was an item of the loop held back by maxItemsPerSecond or maxReplicationLag a moment ago?';

/*
 * Called by _advance when a run reaches loop node p_node (index p_k) whose
 * input array, if it has one, has p_n elements.  Returns false when the
 * loop's items are to be created by _advance as usual; otherwise creates
 * the loop and its loop_fill row and returns true.  For keyRanges, checks
 * the table and its index as the run's owner p_owner: a problem is raised
 * when p_raise (bf_start reaching its first loop), and otherwise fails the
 * run (still returning true).
 */
CREATE FUNCTION batchflow._lazy_loop(p_run bigint, p_k int, p_node jsonb, p_n int,
                                     p_owner oid, p_raise boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_src      jsonb := p_node -> 'inputSource';
    v_kind     text;
    v_source   jsonb;
    v_est      float8;
    v_strategy text;
    v_name     text[];
    v_rel      regclass;
    v_key      text;
    v_att      record;
    v_msg      text;
    v_detail   text;
    v_hint     text;
    v_code     text;
    v_lid      bigint;
BEGIN
    IF v_src ? 'query' THEN
        v_kind := 'query';
        v_source := jsonb_build_object('query', v_src ->> 'query');
    ELSIF v_src ? 'keyRanges' THEN
        v_kind := 'keyRanges';
        v_key := v_src -> 'keyRanges' ->> 'key';
        BEGIN
            v_name := parse_ident(v_src -> 'keyRanges' ->> 'table');
        EXCEPTION WHEN invalid_parameter_value THEN
            v_name := ARRAY[v_src -> 'keyRanges' ->> 'table'];
        END;
        IF cardinality(v_name) = 1 THEN
            v_name := ARRAY['public'] || v_name;
        END IF;
        SELECT c.oid INTO v_rel
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE cardinality(v_name) = 2 AND n.nspname = v_name[1] AND c.relname = v_name[2]
           AND c.relkind IN ('r', 'p', 'm');
        IF v_rel IS NULL THEN
            v_code := 'undefined_table';
            v_msg := format('node "%s": inputSource keyRanges: table "%s" does not exist',
                            p_node ->> 'id', v_src -> 'keyRanges' ->> 'table');
            v_detail := 'The table is looked up when the loop starts; a name without a schema means schema public.';
            v_hint := 'Write the table as "schema.name".';
        ELSE
            SELECT a.attnum, format_type(a.atttypid, a.atttypmod) AS type INTO v_att
              FROM pg_attribute a
             WHERE a.attrelid = v_rel AND a.attname = v_key AND a.attnum > 0 AND NOT a.attisdropped;
            IF NOT FOUND THEN
                v_code := 'undefined_column';
                v_msg := format('node "%s": inputSource keyRanges: column "%s" of table %s does not exist',
                                p_node ->> 'id', v_key, v_rel);
                v_detail := 'The key must be a column of the table.';
                v_hint := 'Name the column the ranges are cut on, usually the primary key.';
            ELSIF NOT has_column_privilege(p_owner, v_rel, v_att.attnum, 'SELECT') THEN
                v_code := 'insufficient_privilege';
                v_msg := format('permission denied for table %s', v_rel);
                v_detail := format('The key ranges are read as the role that started the run, which may not read column "%s".', v_key);
                v_hint := format('GRANT SELECT ON %s TO the role that starts the run.', v_rel);
            ELSIF NOT EXISTS (SELECT 1 FROM pg_index i
                                JOIN pg_class ic ON ic.oid = i.indexrelid
                                JOIN pg_am am ON am.oid = ic.relam
                               WHERE i.indrelid = v_rel AND i.indkey[0] = v_att.attnum
                                 AND am.amname = 'btree' AND i.indpred IS NULL
                                 AND i.indisvalid AND i.indisready) THEN
                v_code := 'object_not_in_prerequisite_state';
                v_msg := format('node "%s": inputSource keyRanges needs an index on %s (%s)',
                                p_node ->> 'id', v_rel, v_key);
                v_detail := 'Ranges are found by keyset scans of a btree index whose first column is the key; without one, every range would scan the whole table.';
                v_hint := format('Create one: CREATE INDEX ON %s (%I);', v_rel, v_key);
            END IF;
        END IF;
        IF v_msg IS NOT NULL THEN
            IF p_raise THEN
                RAISE EXCEPTION '%', v_msg USING ERRCODE = v_code, DETAIL = v_detail, HINT = v_hint;
            END IF;
            UPDATE batchflow.run
               SET status = 'failed', finished_at = clock_timestamp(), current_node = p_k,
                   error = format('%s: %s %s', v_msg, v_detail, v_hint)
             WHERE id = p_run;
            PERFORM batchflow._run_finished_on_commit();
            RETURN true;
        END IF;
        v_source := jsonb_build_object(
            'size', (v_src -> 'keyRanges' ->> 'size')::int,
            -- Qualified: an unqualified ORDER BY would sort the text output column.
            'first', format('SELECT t.%1$I::text, to_jsonb(t.%1$I) FROM %2$s AS t WHERE t.%1$I IS NOT NULL ORDER BY t.%1$I LIMIT 1',
                            v_key, v_rel),
            'next', format('SELECT t.%1$I::text, to_jsonb(t.%1$I) FROM %2$s AS t WHERE t.%1$I > $1::%3$s ORDER BY t.%1$I OFFSET $2 LIMIT 1',
                           v_key, v_rel, v_att.type));
    ELSIF p_n >= batchflow._lazy_threshold() AND NOT p_node ? 'dependsOn' THEN
        v_kind := 'array';
        v_est := p_n;
        v_source := CASE WHEN v_src ? 'static' THEN jsonb_build_object('from', 'static')
                         WHEN v_src ? 'variable' THEN jsonb_build_object('from', 'vars', 'name', v_src ->> 'variable')
                         ELSE jsonb_build_object('from', 'outputs', 'name', v_src ->> 'activity') END;
    ELSE
        RETURN false;
    END IF;

    v_strategy := coalesce(p_node ->> 'errorStrategy', 'fail-fast');
    INSERT INTO batchflow.loop (run_id, node_index, node_id, kind, node, sequential,
                                concurrency, error_strategy, max_retries,
                                retry_delay_ms, total, status, started_at)
    VALUES (p_run, p_k, p_node ->> 'id', 'loop', p_node,
            p_node ->> 'loopType' = 'sequential',
            coalesce((p_node ->> 'concurrency')::int, 1),
            v_strategy,
            coalesce((p_node ->> 'maxRetries')::int,
                     CASE WHEN v_strategy = 'retry' THEN 3 ELSE 0 END),
            coalesce((p_node ->> 'retryDelayMs')::int, 1000),
            CASE WHEN v_kind = 'array' THEN p_n ELSE 0 END,
            'running', clock_timestamp())
    RETURNING id INTO v_lid;
    INSERT INTO batchflow.loop_fill (loop_ref, run_id, kind, source, estimate)
    VALUES (v_lid, p_run, v_kind, v_source, v_est);
    UPDATE batchflow.run SET current_node = p_k WHERE id = p_run;
    PERFORM batchflow._wake_on_commit();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION batchflow._lazy_loop(bigint, int, jsonb, int, oid, boolean) IS 'Internal: start a loop whose items the workers materialise in chunks (query, keyRanges, large arrays)';

REVOKE ALL ON FUNCTION batchflow._lazy_threshold(), batchflow._loop_throttled(bigint),
    batchflow._lazy_loop(bigint, int, jsonb, int, oid, boolean) FROM PUBLIC;
