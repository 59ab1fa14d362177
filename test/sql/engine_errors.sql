-- Error strategies: fail-fast, continue, retry with backoff; statement timeouts.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

CREATE TABLE eng_errors_sink (wf text NOT NULL, idx int NOT NULL, UNIQUE (wf, idx));
CREATE FUNCTION eng_errors_fail(msg text) RETURNS int
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '%', msg; END $$;

-- fail-fast (the default), sequential: item 5 of 10 fails; items 0-4 are
-- done, 6-9 never start.
SELECT bf_register('eng_errors_failfast', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_errors_sink SELECT 'failfast', CASE WHEN $2 = 5 THEN eng_errors_fail('item five is bad') ELSE $2 END"}]},
  {"id": "after", "type": "activity", "activity": "sql",
   "sql": "INSERT INTO eng_errors_sink VALUES ('failfast-after', 0)"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_errors_failfast') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT status, count(*), min(idx), max(idx), max(attempts) AS attempts
  FROM batchflow.items WHERE run_id = :run GROUP BY status ORDER BY min(idx);
SELECT idx, error FROM batchflow.items WHERE run_id = :run AND status = 'failed';
SELECT wf, count(*), max(idx) FROM eng_errors_sink WHERE wf LIKE 'failfast%' GROUP BY wf;
SELECT node_id, status FROM batchflow.loop WHERE run_id = :run;

-- continue: items 2, 5 and 8 fail, the rest are done, the run goes on.
SELECT bf_register('eng_errors_continue', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "errorStrategy": "continue",
   "inputSource": {"static": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO eng_errors_sink SELECT 'continue', CASE WHEN $2 IN (2, 5, 8) THEN eng_errors_fail('bad item ' || $2) ELSE $2 END"}]},
  {"id": "after", "type": "activity", "activity": "sql",
   "sql": "INSERT INTO eng_errors_sink VALUES ('continue-after', 0)"}]}$j$) > 0 AS registered;
SELECT bf_start('eng_errors_continue') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT loop_id, status, count(*), max(attempts) AS attempts
  FROM batchflow.items WHERE run_id = :run GROUP BY loop_id, status ORDER BY loop_id, status;
SELECT idx, error FROM batchflow.items WHERE run_id = :run AND status = 'failed' ORDER BY idx;
SELECT e.idx, e.attempt, e.sqlstate, e.error
  FROM batchflow.item_error e WHERE e.run_id = :run ORDER BY e.idx, e.attempt;
SELECT wf, count(*) FROM eng_errors_sink WHERE wf LIKE 'continue%' GROUP BY wf ORDER BY wf;

-- retry: item 0 fails twice then succeeds (3 attempts); item 1 always
-- fails (1 + maxRetries 3 = 4 attempts).  The attempt counter must survive
-- the failed attempts' rollback, so it is a sequence.
CREATE SEQUENCE eng_errors_flaky;
SELECT bf_register('eng_errors_retry', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "errorStrategy": "retry", "maxRetries": 3, "retryDelayMs": 100,
   "inputSource": {"static": ["flaky", "broken"]},
   "children": [{"id": "try", "type": "activity", "activity": "sql",
                 "sql": "SELECT CASE WHEN $1 = '\"broken\"' THEN eng_errors_fail('always broken') WHEN nextval('eng_errors_flaky') <= 2 THEN eng_errors_fail('flaky, try ' || currval('eng_errors_flaky')) ELSE 42 END"}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_errors_retry') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT status, error FROM batchflow.runs WHERE id = :run;
SELECT idx, item, status, attempts, output, error FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT idx, attempt, error FROM batchflow.item_error WHERE run_id = :run ORDER BY idx, attempt;
SELECT loop_id, idx, item, attempts, error FROM bf_report(:run);
-- Exponential backoff from retryDelayMs 100: attempt k+1 of item 1 starts
-- no earlier than 100 * 2^(k-1) ms after attempt k failed.  The first wait
-- is shorter than the third: the delay doubles, it is not a constant.
SELECT attempt AS after_attempt, 100 * 2 ^ (attempt - 1) AS backoff_ms,
       next_failed_at - failed_at >= 100 * 2 ^ (attempt - 1) * interval '1 millisecond' AS waited
  FROM (SELECT attempt, failed_at, lead(failed_at) OVER (ORDER BY attempt) AS next_failed_at
          FROM batchflow.item_error WHERE run_id = :run AND idx = 1) e
 WHERE next_failed_at IS NOT NULL ORDER BY attempt;
SELECT (g[2] - g[1]) < (g[4] - g[3]) AS doubled
  FROM (SELECT array_agg(failed_at ORDER BY attempt) g
          FROM batchflow.item_error WHERE run_id = :run AND idx = 1) x;

-- timeoutMs cancels a child statement that runs too long.
SELECT bf_register('eng_errors_timeout', $j${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "errorStrategy": "continue",
   "inputSource": {"static": [0.01, 30]},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(($1)::float8)::text", "timeoutMs": 200}]}]}$j$) > 0 AS registered;
SELECT bf_start('eng_errors_timeout') AS run \gset
SELECT bf_wait(:run, '1 minute');
SELECT idx, item, status, error, duration < interval '10 seconds' AS cut_short
  FROM batchflow.items WHERE run_id = :run ORDER BY idx;
SELECT sqlstate FROM batchflow.item_error WHERE run_id = :run;

DROP TABLE eng_errors_sink;
DROP SEQUENCE eng_errors_flaky;
DROP FUNCTION eng_errors_fail(text);
DELETE FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version WHERE workflow LIKE 'eng\_errors\_%');
DELETE FROM batchflow.workflow WHERE name LIKE 'eng\_errors\_%';
