-- Order fulfilment: one child workflow per order.
--
--   psql -d DB -f examples/order_fulfilment.sql
--
-- 12 orders of 1 to 5 lines each.  Workflow example_fulfil_order handles
-- one order: it reserves stock for each line (a loop, two lines at a time)
-- and then marks the order packed.  Workflow example_fulfil_all runs one
-- child run of it per order, at most 4 orders at a time: its loop's only
-- child is a workflow activity, whose input is templated from the item
-- ({{item.id}}, {{item.lines}}).  While an order's child run works, the
-- parent item holds no worker: the pool executes the children's items.
-- Order 7 asks for more of a product than is in stock, so its child run
-- fails; the parent loop goes on ("continue") and reports the failed order
-- with the child's error.
--
-- Everything lives in schema example_fulfil, dropped and recreated on every
-- load, so the file can be run again and again.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
DROP SCHEMA IF EXISTS example_fulfil CASCADE;
RESET client_min_messages;
CREATE SCHEMA example_fulfil;

CREATE TABLE example_fulfil.product (
    sku    text PRIMARY KEY,
    stock  int NOT NULL CHECK (stock >= 0)
);
CREATE TABLE example_fulfil.orders (
    id      int PRIMARY KEY,
    lines   jsonb NOT NULL,
    packed  boolean NOT NULL DEFAULT false
);
CREATE TABLE example_fulfil.reservation (
    order_id  int NOT NULL REFERENCES example_fulfil.orders,
    sku       text NOT NULL REFERENCES example_fulfil.product,
    qty       int NOT NULL CHECK (qty > 0),
    PRIMARY KEY (order_id, sku)
);

INSERT INTO example_fulfil.product
SELECT 'sku-' || g, 100 FROM generate_series(1, 5) g;
-- Order o has 1 + o % 5 lines of 1 to 3 units; order 7 wants 500 of sku-1.
INSERT INTO example_fulfil.orders (id, lines)
SELECT o, (SELECT jsonb_agg(jsonb_build_object('sku', 'sku-' || l,
                                               'qty', CASE WHEN o = 7 AND l = 1 THEN 500 ELSE 1 + (o + l) % 3 END)
                            ORDER BY l)
             FROM generate_series(1, 1 + o % 5) l)
  FROM generate_series(1, 12) o;

-- One order: reserve every line, then mark the order packed.
SELECT bf_register('example_fulfil_order', $json${
  "description": "Reserve the stock of one order's lines, then pack it",
  "nodes": [
    {"id": "reserve", "type": "loop", "loopType": "parallel", "concurrency": 2,
     "inputSource": {"variable": "lines"},
     "children": [
       {"id": "take", "type": "activity", "activity": "sql",
        "sql": "WITH p AS (UPDATE example_fulfil.product SET stock = stock - ($1 ->> 'qty')::int WHERE sku = $1 ->> 'sku' RETURNING sku) INSERT INTO example_fulfil.reservation SELECT ($3 -> 'vars' ->> 'order')::int, p.sku, ($1 ->> 'qty')::int FROM p, pg_sleep(0.05) RETURNING sku"}
     ]},
    {"id": "pack", "type": "activity", "activity": "sql",
     "sql": "UPDATE example_fulfil.orders SET packed = true WHERE id = ($3 -> 'vars' ->> 'order')::int RETURNING id"}
  ]
}$json$) > 0 AS registered;

-- All orders: one child run per order, four orders at a time.
SELECT bf_register('example_fulfil_all', $json${
  "description": "Fulfil every open order, one child run per order",
  "nodes": [
    {"id": "open_orders", "type": "activity", "activity": "sql",
     "sql": "SELECT jsonb_agg(jsonb_build_object('id', id, 'lines', lines) ORDER BY id) FROM example_fulfil.orders WHERE NOT packed",
     "output": "orders"},
    {"id": "fulfil", "type": "loop", "loopType": "parallel", "concurrency": 4,
     "inputSource": {"variable": "orders"},
     "errorStrategy": "continue",
     "children": [
       {"id": "one_order", "type": "activity", "activity": "workflow",
        "workflow": "example_fulfil_order",
        "input": {"order": "{{item.id}}", "lines": "{{item.lines}}"}}
     ]}
  ]
}$json$) > 0 AS registered;

SELECT bf_start('example_fulfil_all') AS run \gset
SELECT bf_wait(:run) AS status;

-- The result: 11 orders packed; order 7 failed with its child run's error
-- (the stock check of sku-1), and was not packed.
SELECT i.idx, (i.item ->> 'id')::int AS order_id, i.status, i.output ->> 'status' AS child_status,
       regexp_replace(regexp_replace(i.error, 'run \d+', 'run N', 'g'), ' \(Failing row.*$', '') AS error
  FROM batchflow.items i
 WHERE i.run_id = :run AND i.loop_id = 'fulfil'
 ORDER BY i.idx;
SELECT count(*) AS child_runs, count(*) FILTER (WHERE status = 'succeeded') AS succeeded
  FROM batchflow.runs WHERE parent_run = :run;
SELECT count(*) FILTER (WHERE packed) AS packed, count(*) AS orders FROM example_fulfil.orders;
-- Never more than four orders in flight: computed from the child runs' times.
SELECT max(n) <= 4 AS at_most_4_orders_at_once
  FROM (SELECT (SELECT count(*) FROM batchflow.runs o
                 WHERE o.parent_run = c.parent_run
                   AND o.started_at <= c.started_at AND o.finished_at > c.started_at) AS n
          FROM batchflow.runs c WHERE c.parent_run = :run) s;
