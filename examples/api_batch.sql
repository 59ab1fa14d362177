-- API batch processor: push 500 new orders to a remote fulfilment API, five
-- calls at a time, retrying the calls that fail.
--
--   python3 test/http_server.py /tmp/api.port &       # the local API
--   psql -d DB -v api=http://127.0.0.1:$(cat /tmp/api.port) -f examples/api_batch.sql
--
-- The API is test/http_server.py's /flaky endpoint on 127.0.0.1: it answers
-- 500 to the first N calls for an id (N is the fails parameter of the url)
-- and 200 {"id": ..., "attempt": n} after that; with ms=20 every call takes
-- 20 ms, like a real remote service.  The table example_api.fault_plan says
-- which orders the endpoint fails and how often (85 failures over 65
-- orders, some once, some twice, some three times); the loop's retry
-- strategy (maxRetries 3) absorbs them all, so every order ends synced.
--
-- Each item makes two steps: an HTTP POST with the order as JSON body (the
-- request carries an Idempotency-Key that stays the same across retries),
-- then an SQL step that records the API's answer in example_api.sync_log.
-- The SQL step commits together with the item's completion, so each order
-- is logged exactly once; the HTTP call itself is at-least-once (a worker
-- killed mid-call repeats it, with the same Idempotency-Key).
--
-- Everything lives in schema example_api, dropped and recreated on every
-- load, so the file can be run again and again (each run uses its run id in
-- the endpoint's ids, so the endpoint fails each order afresh).

\set ON_ERROR_STOP on
\if :{?api}
\else
DO $$BEGIN RAISE EXCEPTION 'psql variable "api" is not set'
    USING HINT = 'Give the base URL of the API: psql -v api=http://127.0.0.1:PORT -f examples/api_batch.sql'; END$$;
\endif
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
DROP SCHEMA IF EXISTS example_api CASCADE;
RESET client_min_messages;
CREATE SCHEMA example_api;

CREATE TABLE example_api.orders (
    id         int PRIMARY KEY,
    customer   text NOT NULL,
    email      text NOT NULL,
    country    char(2) NOT NULL,
    lines      int NOT NULL,
    total      numeric(10, 2) NOT NULL,
    currency   char(3) NOT NULL,
    placed_at  timestamptz NOT NULL
);

-- How many times the endpoint answers 500 before it accepts an order.
CREATE TABLE example_api.fault_plan (
    order_id int PRIMARY KEY REFERENCES example_api.orders,
    fails    int NOT NULL CHECK (fails BETWEEN 1 AND 3)
);

-- What the API answered, one row per order (the primary key would refuse
-- a second row for the same order).
CREATE TABLE example_api.sync_log (
    order_id       int PRIMARY KEY REFERENCES example_api.orders,
    http_status    int NOT NULL,
    remote_attempt int NOT NULL,
    synced_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- 500 orders from 20 customers in six countries, 1 to 8 lines each.
INSERT INTO example_api.orders
SELECT g,
       c.name,
       lower(replace(c.name, ' ', '.')) || '@example.' || (ARRAY['com', 'de', 'fr', 'jp', 'com.br', 'in'])[1 + c.k % 6],
       (ARRAY['US', 'DE', 'FR', 'JP', 'BR', 'IN'])[1 + c.k % 6],
       1 + ('x' || substr(m.h, 9, 2))::bit(8)::int % 8,
       round((5 + ('x' || substr(m.h, 11, 6))::bit(24)::int % 50000 / 100.0)::numeric, 2),
       (ARRAY['USD', 'EUR', 'EUR', 'JPY', 'BRL', 'INR'])[1 + c.k % 6],
       timestamptz '2026-11-01 08:00:00+00' + g * interval '37 minutes'
  FROM generate_series(1, 500) g,
       LATERAL (SELECT md5('order ' || g) AS h) m,
       LATERAL (SELECT ('x' || substr(m.h, 1, 4))::bit(16)::int % 20 AS k) ck,
       LATERAL (SELECT ck.k,
                       (ARRAY['Olivia Smith', 'Liam Müller', 'Emma Martin', 'Noah Tanaka', 'Amelia Silva',
                              'Oliver Patel', 'Sofia Garcia', 'Elijah Schmidt', 'Mia Bernard', 'Lucas Sato',
                              'Hana Santos', 'Mateo Sharma', 'Aiko Johnson', 'Ravi Weber', 'Chloe Dubois',
                              'Jonas Suzuki', 'Lea Costa', 'Paulo Singh', 'Ines Brown', 'Kenji Fischer'])[1 + ck.k]
                       AS name) c;

-- Every 10th order fails once, every 50th (another residue) twice, every
-- 100th (a third residue) three times: 50 + 2 * 10 + 3 * 5 = 85 failures.
INSERT INTO example_api.fault_plan
SELECT id, CASE WHEN id % 100 = 42 THEN 3 WHEN id % 50 = 7 THEN 2 ELSE 1 END
  FROM example_api.orders
 WHERE id % 100 = 42 OR id % 50 = 7 OR id % 10 = 3;

-- The workflow.  The url is the only part that depends on where the API
-- runs: it is set from the psql variable with jsonb_set, so the variable
-- is never pasted into the JSON text.
SELECT bf_register('example_api_batch', jsonb_set($json${
  "description": "Push new orders to the fulfilment API, five calls at a time, with retries",
  "nodes": [
    {"id": "select", "type": "activity", "activity": "sql",
     "sql": "SELECT jsonb_agg(jsonb_build_object('order_id', o.id, 'customer', o.customer, 'email', o.email, 'country', o.country, 'lines', o.lines, 'total', o.total, 'currency', o.currency, 'placed_at', o.placed_at, 'fails', coalesce(f.fails, 0)) ORDER BY o.id) FROM example_api.orders o LEFT JOIN example_api.fault_plan f ON f.order_id = o.id WHERE NOT EXISTS (SELECT 1 FROM example_api.sync_log s WHERE s.order_id = o.id)",
     "output": "orders"},
    {"id": "push", "type": "loop", "loopType": "parallel", "concurrency": 5,
     "inputSource": {"variable": "orders"},
     "errorStrategy": "retry", "maxRetries": 3, "retryDelayMs": 200,
     "children": [
       {"id": "post", "type": "activity", "activity": "http", "method": "POST",
        "url": "set below from the psql variable api",
        "headers": {"X-Customer-Email": "{{item.email}}"},
        "body": {"order": "{{item.order_id}}", "customer": "{{item.customer}}",
                 "amount": "{{item.total}}", "currency": "{{item.currency}}",
                 "lines": "{{item.lines}}",
                 "reference": "order {{item.order_id}}, batchflow run {{run}}"},
        "timeoutMs": 5000},
       {"id": "log", "type": "activity", "activity": "sql",
        "sql": "INSERT INTO example_api.sync_log (order_id, http_status, remote_attempt) VALUES (($1 ->> 'order_id')::int, ($3 -> 'prev' ->> 'status')::int, ($3 -> 'prev' -> 'body' ->> 'attempt')::int) RETURNING jsonb_build_object('order_id', order_id, 'attempt', remote_attempt)"}
     ]}
  ]
}$json$, '{nodes,1,children,0,url}',
   to_jsonb(rtrim(:'api', '/') || '/flaky?id={{run}}-{{item.order_id}}&fails={{item.fails}}&ms=20'))) > 0 AS registered;

SELECT bf_start('example_api_batch') AS run \gset
SELECT bf_wait(:run) AS status;

-- The result: 500 orders synced, the failed calls retried.
SELECT status, count(*) AS orders, sum(attempts) AS calls, max(attempts) AS max_attempts
  FROM batchflow.items WHERE run_id = :run AND loop_id = 'push'
 GROUP BY status ORDER BY status;
SELECT attempts, count(*) AS orders
  FROM batchflow.items WHERE run_id = :run AND loop_id = 'push'
 GROUP BY attempts ORDER BY attempts;
SELECT count(*) AS failed_calls,
       (SELECT sum(fails) FROM example_api.fault_plan) AS injected
  FROM batchflow.item_error WHERE run_id = :run;
SELECT count(*) AS logged,
       count(*) FILTER (WHERE s.remote_attempt = 1 + coalesce(f.fails, 0)) AS attempt_as_planned,
       count(*) FILTER (WHERE s.http_status = 200) AS status_200
  FROM example_api.sync_log s LEFT JOIN example_api.fault_plan f USING (order_id);
SELECT error FROM batchflow.item_error WHERE run_id = :run ORDER BY idx, attempt LIMIT 1;
SELECT loop_id, total, completed, failed, percent FROM bf_progress(:run) WHERE loop_id = 'push';
