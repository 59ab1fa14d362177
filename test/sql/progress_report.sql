-- Final progress with failures, bf_report and bf_summary: a "continue"
-- loop where some items fail, a "retry" loop whose failing items use up
-- their retries, and a failed item of 5 kB that bf_report cuts to 1 kB.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- 30 items at concurrency 3; items that are multiples of 7 (7, 14, 21, 28)
-- fail with a division by zero.
SELECT bf_register('progress_report_cont', $j${"nodes": [
  {"id": "divide", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "things"}, "errorStrategy": "continue",
   "children": [{"id": "div", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / (($1)::int % 7)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('progress_report_cont',
                jsonb_build_object('things', (SELECT jsonb_agg(g) FROM generate_series(1, 30) g))) AS run \gset
SELECT bf_wait(:run, '1 minute');

-- 100 %, with exactly the four failures counted.
SELECT loop_id, status, total, completed, failed, active, percent, eta
  FROM bf_progress(:run);
SELECT loop_id, kind, status, total, succeeded, failed, skipped, remaining,
       failed_attempts, last_error
  FROM bf_summary(:run);
SELECT loop_id, idx, item, attempts, error FROM bf_report(:run);
-- The counts agree with the items themselves.
SELECT status, count(*) FROM batchflow.items WHERE run_id = :run GROUP BY status ORDER BY status;

-- Retry: items below 0 always fail, and so does a big item (an object of
-- 5 kB); each is tried 1 + 2 times.  The retry strategy goes on after
-- failures, so the second loop runs too.
SELECT bf_register('progress_report_retry', $j${"nodes": [
  {"id": "check", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "things"},
   "errorStrategy": "retry", "maxRetries": 2, "retryDelayMs": 10,
   "children": [{"id": "positive", "type": "activity", "activity": "sql",
                 "sql": "SELECT CASE WHEN jsonb_typeof($1) = 'object' OR ($1)::int < 0 THEN (1 / ($2 * 0))::text ELSE 'ok' END"}]},
  {"id": "after", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [1, 2]},
   "children": [{"id": "noop", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}]}$j$) > 0 AS registered;
SELECT bf_start('progress_report_retry',
                jsonb_build_object('things',
                    jsonb_build_array(1, -2, 3, -4, 5,
                                      jsonb_build_object('n', 6, 'payload', repeat('x', 5000))))) AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT loop_id, status, total, completed, failed, active, percent, eta FROM bf_progress(:run);
SELECT loop_id, kind, status, total, succeeded, failed, skipped, remaining,
       failed_attempts, last_error
  FROM bf_summary(:run);

-- bf_report: one row per failed item with its attempts and last error; the
-- small items as they are, the 5 kB item cut to at most 1 kB.
SELECT loop_id, idx, CASE WHEN octet_length(item::text) > 100 THEN '(long)' ELSE item::text END AS item,
       attempts, error
  FROM bf_report(:run);
SELECT octet_length(i.item::text) AS stored_bytes,
       octet_length(r.item::text) AS reported_bytes,
       octet_length(r.item::text) <= 1024 AS within_1kb,
       jsonb_typeof(r.item) AS reported_type,
       left(r.item #>> '{}', 30) AS starts_with,
       right(r.item #>> '{}', 4) AS ends_with,
       i.item::text LIKE left(r.item #>> '{}', 1000) || '%' AS is_a_prefix
  FROM bf_report(:run) r
  JOIN batchflow.items i ON i.run_id = :run AND i.loop_id = r.loop_id AND i.idx = r.idx
 WHERE r.idx = 5;

-- truncate_jsonb on its own: values that fit are unchanged; multibyte text
-- is never cut inside a character and the result always fits.
SELECT batchflow.truncate_jsonb('{"a": 1}') AS small,
       batchflow.truncate_jsonb(to_jsonb(repeat('é', 20)), 16) AS cut,
       octet_length(batchflow.truncate_jsonb(to_jsonb(repeat('é', 2000)))::text) <= 1024 AS multibyte_fits,
       octet_length(batchflow.truncate_jsonb(jsonb_build_object('k', repeat('"', 3000)))::text) <= 1024 AS escapes_fit;

-- A run with no failures has an empty report.
SELECT count(*) AS report_rows FROM bf_report(:run) WHERE loop_id = 'after';

-- bf_retry re-opens a loop: its counts are recounted from the items and end
-- exact.  Items that are multiples of 7 fail until the table says fixed.
CREATE TABLE progress_report_fixed (fixed int);
GRANT SELECT ON progress_report_fixed TO PUBLIC;
SELECT bf_register('progress_report_redo', $j${"nodes": [
  {"id": "divide", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "things"}, "errorStrategy": "continue",
   "children": [{"id": "div", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / (($1)::int % 7 + (SELECT count(*) FROM progress_report_fixed)::int)"}]}]}$j$) > 0 AS registered;
SELECT bf_start('progress_report_redo',
                jsonb_build_object('things', (SELECT jsonb_agg(g) FROM generate_series(1, 30) g))) AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT loop_id, status, total, completed, failed, percent FROM bf_progress(:run);
INSERT INTO progress_report_fixed VALUES (1);
SELECT bf_retry(:run) AS requeued;
SELECT bf_wait(:run, '1 minute');
SELECT loop_id, status, total, completed, failed, active, percent, eta FROM bf_progress(:run);
SELECT loop_id, succeeded, failed, skipped, remaining, failed_attempts FROM bf_summary(:run);
SELECT count(*) AS report_rows FROM bf_report(:run);
DROP TABLE progress_report_fixed;
