-- The history queries of docs/monitoring.md, on a finished run: filter by
-- status, search item data and outputs with jsonb operators, page with a
-- keyset, export with \copy ... CSV HEADER and read the file back.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- 60 customers; those of country "XX" fail (continue), the others return
-- {"id": n, "greeting": "hello <name>"}.
SELECT bf_register('progress_history_greet', $j${"nodes": [
  {"id": "greet", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "customers"}, "errorStrategy": "continue",
   "children": [{"id": "hello", "type": "activity", "activity": "sql",
                 "sql": "SELECT CASE WHEN $1->>'country' = 'XX' THEN (1 / ($2 * 0))::text::jsonb ELSE jsonb_build_object('id', $1->'id', 'greeting', 'hello ' || ($1->>'name')) END"}]}]}$j$) > 0 AS registered;
SELECT bf_start('progress_history_greet', jsonb_build_object('customers',
         (SELECT jsonb_agg(jsonb_build_object(
                     'id', g,
                     'name', 'customer ' || g,
                     'country', (ARRAY['FR', 'DE', 'XX'])[1 + g % 3],
                     'tags', CASE WHEN g % 5 = 0 THEN '["vip"]'::jsonb ELSE '[]'::jsonb END)
                  ORDER BY g)
            FROM generate_series(1, 60) g))) AS run \gset
SELECT bf_wait(:run, '1 minute');

-- Filter by status: the failed items with their error.
SELECT status, count(*) FROM batchflow.items WHERE run_id = :run GROUP BY status ORDER BY status;
SELECT loop_id, idx, item->>'name' AS name, attempts, error
  FROM batchflow.items
 WHERE run_id = :run AND status = 'failed'
 ORDER BY loop_id, idx
 LIMIT 3;

-- Search the item data: containment, a field, an array member, a JSON path.
SELECT count(*) AS fr FROM batchflow.items WHERE run_id = :run AND item @> '{"country": "FR"}';
SELECT idx, item->>'name' AS name FROM batchflow.items
 WHERE run_id = :run AND item->>'name' = 'customer 42';
SELECT count(*) AS vip FROM batchflow.items WHERE run_id = :run AND item->'tags' ? 'vip';
SELECT count(*) AS big_ids FROM batchflow.items
 WHERE run_id = :run AND jsonb_path_exists(item, '$.id ? (@ > 50)');
-- ... and the outputs.
SELECT idx, output FROM batchflow.items
 WHERE run_id = :run AND output @> '{"greeting": "hello customer 7"}';

-- Keyset pagination: a page of 5 after the last index seen (-1 at first);
-- idx has no gaps within a loop, so the page is bounded above too.
\set last_idx -1
SELECT idx, status FROM batchflow.items
 WHERE run_id = :run AND loop_id = 'greet'
   AND idx > :last_idx AND idx <= :last_idx + 5
 ORDER BY idx;
\set last_idx 54
SELECT idx, status FROM batchflow.items
 WHERE run_id = :run AND loop_id = 'greet'
   AND idx > :last_idx AND idx <= :last_idx + 5
 ORDER BY idx;
-- With a filter that skips items: LIMIT instead of the upper bound.
\set last_idx 10
SELECT idx, error FROM batchflow.items
 WHERE run_id = :run AND loop_id = 'greet' AND status = 'failed' AND idx > :last_idx
 ORDER BY idx
 LIMIT 5;
-- Walking every page of 7 visits each item exactly once, in order.
CREATE TEMP TABLE progress_history_seen (page int, idx int, seq serial);
CREATE FUNCTION pg_temp.walk_pages(p_run bigint) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_last int := -1;
    v_page int := 0;
    v_rows int;
BEGIN
    LOOP
        INSERT INTO progress_history_seen (page, idx)
        SELECT v_page, idx FROM batchflow.items
         WHERE run_id = p_run AND loop_id = 'greet'
           AND idx > v_last AND idx <= v_last + 7
         ORDER BY idx;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        EXIT WHEN v_rows = 0;
        SELECT max(idx) INTO v_last FROM progress_history_seen;
        v_page := v_page + 1;
    END LOOP;
    RETURN v_page;
END;
$$;
SELECT pg_temp.walk_pages(:run) AS pages;
SELECT count(*) AS seen, count(DISTINCT idx) AS distinct_seen,
       array_agg(idx ORDER BY seq) = array_agg(idx ORDER BY idx) AS in_order,
       min(idx), max(idx)
  FROM progress_history_seen;

-- An index serves these queries (forced off the sequential scan, which a
-- table this small would rightly prefer): both read only the run's items,
-- a page only those after the last index seen.
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE 'EXPLAIN (COSTS OFF) ' || q;
END;
$$;
SET enable_seqscan = off;
SELECT bool_or(l LIKE '%Index Cond: (run_id = %') AS failed_reads_only_the_run
  FROM pg_temp.plan_of(format(
         'SELECT loop_id, idx, error FROM batchflow.items WHERE run_id = %s AND status = %L ORDER BY loop_id, idx',
         :run, 'failed')) l;
SELECT bool_or(l ~ 'Index Cond: .*\(idx > 54\) AND \(idx <= 79\)') AS page_reads_only_its_rows
  FROM pg_temp.plan_of(format(
         'SELECT idx, status FROM batchflow.items WHERE run_id = %s AND loop_id = %L AND idx > %s AND idx <= %s + 25 ORDER BY idx',
         :run, 'greet', 54, 54)) l;
-- A keyset page with LIMIT alone stops after its rows: the item index
-- gives them in idx order (no sort of the rest of the loop, which sorting
-- is forbidden here to make plain), and only 5 entries of it are read.
CREATE FUNCTION pg_temp.run_plan_of(q text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || q;
END;
$$;
SET enable_sort = off;
SELECT bool_and(l NOT LIKE '%Sort%') AS page_needs_no_sort,
       max(substring(l FROM 'Index (?:Only )?Scan using \S+ on item i .*actual rows=(\d+)')::int)
         AS item_entries_read
  FROM pg_temp.run_plan_of(format(
         'SELECT idx, status FROM batchflow.items WHERE run_id = %s AND loop_id = %L AND idx > %s ORDER BY idx LIMIT 5',
         :run, 'greet', 30)) l;
RESET enable_sort;
RESET enable_seqscan;
DROP TABLE progress_history_seen;

-- CSV export with \copy, then read back into a temporary table.
\! rm -f /tmp/batchflow_progress_history.csv
-- (\copy takes no psql variables: the run is looked up by its workflow.)
\copy (SELECT run_id, loop_id, idx, status, attempts, item, output, error, started_at, finished_at FROM batchflow.items WHERE run_id = (SELECT max(id) FROM batchflow.runs WHERE workflow = 'progress_history_greet') ORDER BY loop_id, idx) TO '/tmp/batchflow_progress_history.csv' CSV HEADER
CREATE TEMP TABLE progress_history_csv (
    run_id bigint, loop_id text, idx int, status text, attempts int, item jsonb,
    output jsonb, error text, started_at timestamptz, finished_at timestamptz);
\copy progress_history_csv FROM '/tmp/batchflow_progress_history.csv' CSV HEADER
\! rm -f /tmp/batchflow_progress_history.csv
SELECT (SELECT count(*) FROM progress_history_csv) AS csv_rows,
       (SELECT count(*) FROM batchflow.items WHERE run_id = :run) AS item_rows,
       (SELECT count(*) FROM progress_history_csv WHERE status = 'failed') AS csv_failed;
-- Same rows, value for value.
SELECT count(*) AS differences
  FROM ((SELECT * FROM progress_history_csv
         EXCEPT
         SELECT run_id, loop_id, idx, status, attempts, item, output, error, started_at, finished_at
           FROM batchflow.items WHERE run_id = :run)
        UNION ALL
        (SELECT run_id, loop_id, idx, status, attempts, item, output, error, started_at, finished_at
           FROM batchflow.items WHERE run_id = :run
         EXCEPT
         SELECT * FROM progress_history_csv)) d;
DROP TABLE progress_history_csv;
