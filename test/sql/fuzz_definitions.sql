-- Property test of the definition parser (bf_register): thousands of
-- definitions mutated at random from valid seeds (keys deleted, renamed,
-- duplicated; values replaced by other types, odd numbers, long or
-- multibyte strings, broken SQL, nested loops; elements dropped, doubled,
-- reordered).  Every call must either succeed or fail with a clean ERROR
-- whose SQLSTATE is one a definition problem may have, whose message is
-- valid UTF-8, and the backend must stay up.
--
-- The number of cases is the psql variable "cases" (5,000 here;
-- bench/fuzz.sh runs a million), the random seed the variable "seed"
-- (0.8 here); a failure repeats with the same seed.
\if :{?cases}
\else
\set cases 5000
\endif
\if :{?seed}
\else
\set seed 0.8
\endif
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- A random element of an array.
CREATE FUNCTION fuzz_pick(a anyarray) RETURNS anyelement LANGUAGE sql AS $$
    SELECT a[1 + floor(random() * cardinality(a))::int]
$$;

-- A random string: ASCII, multibyte, quotes, braces, very long.
CREATE FUNCTION fuzz_string() RETURNS text LANGUAGE sql AS $$
    SELECT fuzz_pick(ARRAY[
        '', ' ', 'x', 'a b', 'sql', 'http', 'loop', 'activity', 'parallel', 'sequential',
        'fail-fast', 'continue', 'retry', 'GET', 'post', 'DELETE', 'variable', 'static',
        'SELECT 1', 'SELECT $1', 'SELECT $1, $2, $3', 'SELECT 1; SELECT 2', 'SELEC', ';',
        'INSERT INTO t VALUES ($1)', repeat('(', 5000) || '1' || repeat(')', 5000),
        'http://127.0.0.1:1/x?q={{item}}', 'ftp://x', 'http://', '{{item}}', '{{item.a.b}}',
        '{{index}}', '{{run}}', '{{', 'nodes', 'id', 'children', 'inputSource',
        repeat('n', 64), repeat('n', 63), 'é' || repeat('é', 40), 'a' || repeat('é', 40),
        '😀' || repeat('ß', 33), E'\\', '"', '''', '$1', 'null', '-1', '1e9',
        repeat('z', 2000), chr(1 + floor(random() * 126)::int) || chr(160 + floor(random() * 5000)::int)])
$$;

-- A random JSON value of any type, sometimes a whole node.
CREATE FUNCTION fuzz_value() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r float8 := random();
BEGIN
    IF r < 0.35 THEN
        RETURN to_jsonb(fuzz_string());
    ELSIF r < 0.6 THEN
        RETURN fuzz_pick(ARRAY['0', '1', '-1', '2', '10', '10001', '2147483647', '2147483648',
                               '-2147483649', '9223372036854775808', '1e400', '1.5', '0.0',
                               '-0', '3600001', '86400001', '100', '101', '1e-400']::jsonb[]);
    ELSIF r < 0.7 THEN
        RETURN fuzz_pick(ARRAY['null', 'true', 'false', '[]', '{}']::jsonb[]);
    ELSIF r < 0.8 THEN
        RETURN fuzz_pick(ARRAY[
            '{"variable": "xs"}', '{"static": [1, 2]}', '{"activity": "pick"}',
            '{"static": []}', '{"variable": "xs", "static": [1]}', '{"static": {}}',
            '{"activity": "nope"}', '{"variable": ""}']::jsonb[]);
    ELSIF r < 0.9 THEN
        RETURN fuzz_pick(ARRAY[
            '{"id": "n", "type": "activity", "activity": "sql", "sql": "SELECT 1"}',
            '{"id": "h", "type": "activity", "activity": "http", "method": "GET", "url": "http://127.0.0.1/"}',
            '{"id": "l", "type": "loop", "loopType": "sequential", "inputSource": {"static": [1]},
              "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}',
            '{"id": "pick", "type": "activity", "activity": "sql", "sql": "SELECT 1", "output": "xs"}']::jsonb[]);
    ELSE
        RETURN jsonb_build_array(fuzz_value(), fuzz_value());
    END IF;
END
$$;

-- One random change somewhere in d.
CREATE FUNCTION fuzz_mutate(d jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    keys text[];
    k text;
    n int;
    i int;
    r float8 := random();
BEGIN
    IF jsonb_typeof(d) = 'object' AND d <> '{}' AND r < 0.8 THEN
        SELECT array_agg(key) INTO keys FROM jsonb_object_keys(d) AS key;
        k := fuzz_pick(keys);
        r := random();
        IF r < 0.45 THEN
            RETURN jsonb_set(d, ARRAY[k], fuzz_mutate(d -> k));
        ELSIF r < 0.6 THEN
            RETURN d - k;
        ELSIF r < 0.75 THEN
            RETURN jsonb_set(d, ARRAY[k], fuzz_value());
        ELSIF r < 0.85 THEN
            RETURN (d - k) || jsonb_build_object(fuzz_string(), d -> k);
        ELSIF r < 0.95 THEN
            RETURN d || jsonb_build_object(fuzz_pick(ARRAY['id', 'type', 'activity', 'sql',
                'loopType', 'concurrency', 'inputSource', 'errorStrategy', 'maxRetries',
                'retryDelayMs', 'children', 'output', 'url', 'method', 'headers', 'body',
                'timeoutMs', 'description', 'nodes', 'variable', 'static', 'concurency']),
                fuzz_value());
        ELSE
            -- Copy one key's value to another key of the object.
            RETURN jsonb_set(d, ARRAY[fuzz_pick(keys)], d -> k);
        END IF;
    ELSIF jsonb_typeof(d) = 'array' AND jsonb_array_length(d) > 0 AND r < 0.8 THEN
        n := jsonb_array_length(d);
        i := floor(random() * n)::int;
        r := random();
        IF r < 0.5 THEN
            RETURN jsonb_set(d, ARRAY[i::text], fuzz_mutate(d -> i));
        ELSIF r < 0.65 THEN
            RETURN d - i;
        ELSIF r < 0.8 THEN
            RETURN jsonb_insert(d, ARRAY[i::text], d -> i);
        ELSIF r < 0.9 THEN
            RETURN (SELECT jsonb_agg(e ORDER BY o DESC) FROM jsonb_array_elements(d) WITH ORDINALITY AS x(e, o));
        ELSE
            RETURN d || jsonb_build_array(fuzz_value());
        END IF;
    END IF;
    RETURN fuzz_value();
END
$$;

CREATE TABLE fuzz_finding (n int, sqlstate text, message text, definition jsonb);

-- Register "cases" mutated definitions; count the outcomes.  An accepted
-- definition is rolled back at once (SQLSTATE BFOK0) so that nothing stays.
CREATE FUNCTION fuzz_run(cases int, seed float8) RETURNS TABLE (outcome text, n bigint) LANGUAGE plpgsql AS $$
DECLARE
    seeds jsonb[] := ARRAY[
        '{"nodes": [
           {"id": "pick", "type": "activity", "activity": "sql",
            "sql": "SELECT jsonb_agg(g) FROM generate_series(1, 3) g", "output": "users"},
           {"id": "send", "type": "loop", "loopType": "parallel", "concurrency": 4,
            "inputSource": {"variable": "users"}, "errorStrategy": "retry", "maxRetries": 3,
            "children": [
              {"id": "mail", "type": "activity", "activity": "sql",
               "sql": "SELECT ($1)::int"},
              {"id": "notify", "type": "activity", "activity": "http", "method": "POST",
               "url": "http://127.0.0.1:8080/notify", "body": {"user": "{{item}}"},
               "timeoutMs": 5000}]}]}',
        '{"description": "static items", "nodes": [
           {"id": "each", "type": "loop", "loopType": "sequential", "errorStrategy": "continue",
            "inputSource": {"static": [1, "two", {"three": 3}]},
            "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT $1, $2, $3"}]}]}',
        '{"nodes": [
           {"id": "a", "type": "activity", "activity": "sql", "sql": "SELECT jsonb_build_array(1, 2)", "output": "v"},
           {"id": "b", "type": "loop", "loopType": "parallel", "concurrency": 2,
            "inputSource": {"activity": "a"}, "retryDelayMs": 10,
            "children": [{"id": "c", "type": "activity", "activity": "http", "method": "GET",
                          "url": "http://127.0.0.1/{{item}}?i={{index}}", "headers": {"X-Run": "{{run}}"}},
                         {"id": "d", "type": "activity", "activity": "sql", "sql": "SELECT $3", "timeoutMs": 100}]}]}'
    ]::jsonb[];
    allowed text[] := ARRAY['22023', '42710', '42704', '0A000', '42602', '54000', '22P02', '22004', '22003'];
    d jsonb;
    st text;
    msg text;
    det text;
    counts jsonb := '{}';
BEGIN
    PERFORM setseed(seed);
    FOR c IN 1 .. cases LOOP
        d := fuzz_pick(seeds);
        FOR m IN 1 .. 1 + floor(random() * 3)::int LOOP
            d := fuzz_mutate(d);
        END LOOP;
        BEGIN
            PERFORM bf_register('fuzz_wf', d);
            RAISE SQLSTATE 'BFOK0';
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
        END;
        IF st = 'BFOK0' THEN
            counts := jsonb_set(counts, '{accepted}', to_jsonb(coalesce((counts ->> 'accepted')::int, 0) + 1));
            CONTINUE;
        END IF;
        counts := jsonb_set(counts, '{rejected}', to_jsonb(coalesce((counts ->> 'rejected')::int, 0) + 1));
        counts := jsonb_set(counts, ARRAY['state ' || st], 'true');
        IF st <> ALL (allowed) THEN
            INSERT INTO fuzz_finding VALUES (c, st, msg, d);
        END IF;
        -- The message and detail must be valid UTF-8 (convert_to verifies).
        BEGIN
            PERFORM convert_to(msg || coalesce(det, ''), 'UTF8');
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO fuzz_finding VALUES (c, st, 'invalid UTF-8 in the message or detail', d);
        END;
    END LOOP;
    RETURN QUERY SELECT 'cases', cases::bigint
        UNION ALL SELECT 'accepted', coalesce((counts ->> 'accepted')::bigint, 0)
        UNION ALL SELECT 'rejected', coalesce((counts ->> 'rejected')::bigint, 0)
        UNION ALL SELECT 'sqlstates', (SELECT count(*) FROM jsonb_object_keys(counts) k WHERE k LIKE 'state %');
END
$$;

-- The parser's NOTICEs about long identifiers in broken SQL are not findings.
SET client_min_messages = warning;
CREATE TEMP TABLE fuzz_result AS SELECT * FROM fuzz_run(:cases, :seed);
RESET client_min_messages;
SELECT (SELECT n FROM fuzz_result WHERE outcome = 'cases') = :cases AS all_cases_ran,
       (SELECT n FROM fuzz_result WHERE outcome = 'accepted') > 0 AS some_accepted,
       (SELECT n FROM fuzz_result WHERE outcome = 'rejected') > :cases / 4 AS many_rejected,
       (SELECT n FROM fuzz_result WHERE outcome = 'sqlstates') >= 2 AS several_sqlstates,
       (SELECT sum(n) FROM fuzz_result WHERE outcome IN ('accepted', 'rejected')) = :cases AS every_case_counted;
-- Findings: none expected.
SELECT n, sqlstate, message, left(definition::text, 200) AS definition FROM fuzz_finding ORDER BY n LIMIT 10;
-- Nothing was stored, and this backend is still the one that started.
SELECT count(*) AS stored FROM batchflow.workflow WHERE name = 'fuzz_wf';

\if :{?verbose}
SELECT * FROM fuzz_result;
\endif
DROP TABLE fuzz_finding, fuzz_result;
DROP FUNCTION fuzz_run(int, float8), fuzz_mutate(jsonb), fuzz_value(), fuzz_string(), fuzz_pick(anyarray);
