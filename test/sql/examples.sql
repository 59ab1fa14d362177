-- The examples in examples/, each loaded exactly as a user would (psql -f),
-- run end to end, with the expected counts.  pg_regress feeds this file to
-- psql on standard input from the top of the source tree, so \i paths are
-- relative to it.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

-- 1. Bulk email sender: 100 users, sequential, 10 invalid addresses.
\i examples/bulk_email.sql
SELECT count(*) FILTER (WHERE status = 'succeeded') = 90 AS ninety_sent,
       count(*) FILTER (WHERE status = 'failed') = 10 AS ten_failed,
       bool_and(status <> 'failed' OR error LIKE '%outbox_recipient_check%') AS failed_on_check
  FROM batchflow.items WHERE run_id = :run AND loop_id = 'send';
-- Sequential: each item started after the previous one finished, in index order.
SELECT bool_and(prev_finished <= started_at) AS one_at_a_time_in_order
  FROM (SELECT started_at, lag(finished_at) OVER (ORDER BY idx) AS prev_finished
          FROM batchflow.items WHERE run_id = :run AND loop_id = 'send') s
 WHERE prev_finished IS NOT NULL;
SELECT count(*) AS invalid_queued FROM example_email.outbox o
  JOIN example_email.app_user u ON u.id = o.user_id WHERE u.id % 10 = 7;
-- Loading it again starts over.
SET client_min_messages = warning;
\o /dev/null
\i examples/bulk_email.sql
\o
RESET client_min_messages;
SELECT status, count(*) FROM batchflow.items WHERE run_id = :run AND loop_id = 'send'
 GROUP BY status ORDER BY status;
SELECT count(*) AS queued_after_reload FROM example_email.outbox;

-- 2. Multi-package build: 20 packages, parallel at 4.
\i examples/package_build.sql
SELECT l.concurrency, l.sequential, l.total, l.status
  FROM batchflow.loop l WHERE l.run_id = :run AND l.node_id = 'build';
SELECT count(*) AS published_artifacts FROM example_build.artifact a
  JOIN batchflow.items i ON i.run_id = :run AND i.loop_id = 'build'
                        AND i.output = to_jsonb('published ' || a.file)
 WHERE a.published;

-- 3. Data migration: 1000 records, parallel at 10, exactly once.
\i examples/data_migration.sql
SELECT l.concurrency, l.total, l.status FROM batchflow.loop l
 WHERE l.run_id = :run AND l.node_id = 'migrate';
SELECT count(*) AS failed_attempts FROM batchflow.item_error WHERE run_id = :run;
SELECT count(*) AS migrated_items
  FROM batchflow.items i JOIN example_migration.customer c ON c.id = (i.output)::int
 WHERE i.run_id = :run AND i.loop_id = 'migrate' AND i.status = 'succeeded';

-- 4. Backfill: a keyRanges loop over the accounts table (40,000 rows here;
-- 1,000,000 by default), every row filled exactly once.
\set rows 40000
\i examples/backfill.sql
SELECT count(*) FILTER (WHERE domain IS NULL) AS unfilled,
       count(*) FILTER (WHERE domain = split_part(email, '@', 2)) AS filled
  FROM example_backfill.accounts;
SELECT count(*) AS ranges, count(*) FILTER (WHERE item ->> 'to' IS NULL) AS open_ended
  FROM batchflow.items WHERE run_id = :run;

-- 5. Order fulfilment: one child workflow per order, 4 orders at a time.
\i examples/order_fulfilment.sql
SELECT l.concurrency, l.total, l.status FROM batchflow.loop l
 WHERE l.run_id = :run AND l.node_id = 'fulfil';
SELECT count(*) AS reservations_of_packed_orders
  FROM example_fulfil.reservation r JOIN example_fulfil.orders o ON o.id = r.order_id
 WHERE o.packed;

-- Clean up.
SET client_min_messages = warning;
DROP SCHEMA example_email, example_build, example_migration, example_backfill, example_fulfil CASCADE;
RESET client_min_messages;
DELETE FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version
                       WHERE workflow IN ('example_bulk_email', 'example_package_build',
                                          'example_data_migration', 'example_backfill',
                                          'example_fulfil_all', 'example_fulfil_order'));
DELETE FROM batchflow.workflow
 WHERE name IN ('example_bulk_email', 'example_package_build', 'example_data_migration',
                'example_backfill', 'example_fulfil_all', 'example_fulfil_order');
