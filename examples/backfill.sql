-- Backfill a new column of a 1,000,000-row table in chunks of 10,000 rows,
-- four chunks at a time, with a keyRanges loop: no statement ever locks more
-- than one chunk of rows, and an interrupted backfill resumes where it
-- stopped.  Load with:  psql -d DB -f examples/backfill.sql
-- (-v rows=N for another size; the default is 1000000).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
DROP SCHEMA IF EXISTS example_backfill CASCADE;
CREATE SCHEMA example_backfill;
RESET client_min_messages;
\if :{?rows}
\else
\set rows 1000000
\endif

-- A table that gained a column: every account's email domain, to fill in.
CREATE TABLE example_backfill.accounts (
    id      bigint PRIMARY KEY,
    email   text NOT NULL,
    domain  text
);
INSERT INTO example_backfill.accounts (id, email)
SELECT g, 'user' || g || '@' || (ARRAY['example.com', 'example.org', 'mail.test', 'corp.example'])[1 + g % 4]
  FROM generate_series(1, :rows) g;
VACUUM ANALYZE example_backfill.accounts;

SELECT bf_register('example_backfill', $j${"description": "fill accounts.domain in chunks of 10,000 rows",
  "nodes": [
  {"id": "fill_domain", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"keyRanges": {"table": "example_backfill.accounts", "key": "id", "size": 10000}},
   "maxReplicationLag": "10s",
   "children": [{"id": "chunk", "type": "activity", "activity": "sql",
     "sql": "UPDATE example_backfill.accounts SET domain = split_part(email, '@', 2) WHERE id >= ($1 ->> 'from')::bigint AND ($1 ->> 'to' IS NULL OR id < ($1 ->> 'to')::bigint)"}]}]}$j$) > 0 AS registered;

SELECT bf_start('example_backfill') AS run \gset
SELECT bf_wait(:run, '10 minutes') AS status;

-- One item per 10,000 rows; every row filled exactly once.
SELECT loop_id, status, total, completed, failed FROM bf_progress(:run);
SELECT idx, item FROM batchflow.items WHERE run_id = :run ORDER BY idx LIMIT 3;
SELECT domain, count(*) FROM example_backfill.accounts GROUP BY domain ORDER BY domain;
