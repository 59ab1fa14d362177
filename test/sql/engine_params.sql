-- What SQL activities receive: $1 item, $2 index, $3 context with "prev";
-- children run in order, top-level nodes run in order.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- $1 jsonb is the item, $2 int its index, $3 jsonb the context.
SELECT bf_register('eng_params_context', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "xs"},
   "children": [{"id": "show", "type": "activity", "activity": "sql",
                 "sql": "SELECT jsonb_build_object('item', $1, 'idx', $2, 'idx_type', pg_typeof($2)::text, 'ctx', $3)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_params_context', '{"xs": ["a", {"b": 2}], "label": "ctx test"}') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, output - 'ctx' AS output,
       (output -> 'ctx') - 'run' AS ctx,
       (output -> 'ctx' ->> 'run')::bigint = :run AS ctx_run_is_the_run
  FROM batchflow.items WHERE run_id = :run ORDER BY idx;

-- Children run in order; each one's output is "prev" in the next one's $3.
SELECT bf_register('eng_params_prev', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"static": [1, 2, 3]},
   "children": [
     {"id": "times10", "type": "activity", "activity": "sql", "sql": "SELECT ($1)::int * 10"},
     {"id": "plus1", "type": "activity", "activity": "sql", "sql": "SELECT ($3 -> 'prev')::int + 1"},
     {"id": "wrap", "type": "activity", "activity": "sql",
      "sql": "SELECT jsonb_build_object('item', $1, 'prev', $3 -> 'prev')"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_params_prev') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, status, output FROM batchflow.items WHERE run_id = :run ORDER BY idx;

-- Item data is passed as parameters, never spliced into the SQL text.
CREATE TABLE eng_params_sink (idx int, item jsonb, txt text);
SELECT bf_register('eng_params_quote', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"variable": "xs"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_params_sink VALUES ($2, $1, $1 ->> 0)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_params_quote',
                $j${"xs": [["'); DROP TABLE eng_params_sink; --"], ["$1 $2 {{item}}"]]}$j$) AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, item, txt FROM eng_params_sink ORDER BY idx;

-- Top-level nodes run in order: each starts after the previous one ended.
CREATE TABLE eng_params_log (seq serial, node text, at timestamptz DEFAULT clock_timestamp());
SELECT bf_register('eng_params_order', $j${"nodes": [
  {"id": "first", "type": "activity", "activity": "sql",
   "sql": "INSERT INTO eng_params_log (node) SELECT 'first' FROM pg_sleep(0.05) RETURNING 'first'"},
  {"id": "middle", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"static": [1, 2, 3, 4, 5, 6, 7, 8]},
   "children": [{"id": "log", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_params_log (node) SELECT 'middle' FROM pg_sleep(0.02)"}]},
  {"id": "last", "type": "activity", "activity": "sql",
   "sql": "INSERT INTO eng_params_log (node) VALUES ('last') RETURNING seq"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_params_order') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT node, count(*) FROM eng_params_log GROUP BY node ORDER BY min(seq);
SELECT (SELECT max(at) FROM eng_params_log WHERE node = 'first') < (SELECT min(at) FROM eng_params_log WHERE node = 'middle')
   AND (SELECT max(at) FROM eng_params_log WHERE node = 'middle') < (SELECT min(at) FROM eng_params_log WHERE node = 'last')
       AS in_order;
SELECT node_id, node_index, kind, status, total,
       finished_at <= lead(started_at) OVER (ORDER BY node_index) AS ended_before_next
  FROM batchflow.loop WHERE run_id = :run ORDER BY node_index;
SELECT status, current_node, outputs ? 'first' AND outputs ? 'last' AS outputs_kept
  FROM batchflow.run WHERE id = :run;

DROP TABLE eng_params_sink, eng_params_log;
