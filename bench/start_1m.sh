#!/bin/bash
# bench/start_1m.sh - time bf_start of a run whose first loop has a million
# items, with the limit checks of batchflow.max_items_per_run and
# batchflow.max_item_size in the way (issue 8).  Each bf_start runs in a
# transaction that is rolled back, so nothing is executed.
#
#   bench/start_1m.sh SOCKETDIR PORT [DB]
set -euo pipefail
host=${1:?usage: bench/start_1m.sh SOCKETDIR PORT [DB]}
port=${2:?missing PORT}
db=${3:-postgres}
psql -X -q -h "$host" -p "$port" -U postgres -d "$db" <<'SQL'
SELECT bf_register('bench_start_1m', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "xs"},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT $2"}]}]}') > 0 AS registered \gset
CREATE TEMP TABLE inputs AS
SELECT 'ints' AS kind, jsonb_build_object('xs', jsonb_agg(g)) AS input FROM generate_series(1, 1000000) g
UNION ALL
SELECT '40-byte strings', jsonb_build_object('xs', jsonb_agg(lpad(g::text, 40, 'x'))) FROM generate_series(1, 1000000) g;
SELECT kind, pg_size_pretty(pg_column_size(input)::bigint) AS input_size FROM inputs;
\set SHOW_CONTEXT never
\timing on
\echo ints (array below max_item_size: no per-item scan)
BEGIN;
SELECT bf_start('bench_start_1m', (SELECT input FROM inputs WHERE kind = 'ints')) > 0 AS started;
ROLLBACK;
\echo 40-byte strings (array above max_item_size: the size of every item is checked)
BEGIN;
SELECT bf_start('bench_start_1m', (SELECT input FROM inputs WHERE kind = '40-byte strings')) > 0 AS started;
ROLLBACK;
\echo the same, refused by max_items_per_run = 999999
SET batchflow.max_items_per_run = 999999;
SELECT bf_start('bench_start_1m', (SELECT input FROM inputs WHERE kind = '40-byte strings')) > 0 AS started;
\timing off
DELETE FROM batchflow.workflow WHERE name = 'bench_start_1m';
SQL
