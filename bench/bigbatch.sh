#!/bin/bash
# bench/bigbatch.sh - big batches (issue 15), side by side in one run:
#
#   1. bf_start of a query source over ROWS rows (target <= 50 ms) and the
#      first item's start after bf_start's commit (target <= 1 s);
#   2. materialisation of those ROWS items by the workers vs a plain
#      INSERT INTO t SELECT of the same rows into a table shaped like
#      batchflow.item (target >= 0.8x its rate), and the workers' private
#      memory (RssAnon) before and after;
#   3. bf_start of a JSON array of ARRAY elements (target <= 1 s);
#   4. end to end, E2E no-op items from a query vs the same items already
#      materialised by bf_start (target <= 1.3x);
#   5. a key-range backfill (UPDATE ... WHERE id >= from AND id < to, size
#      10,000, cap 4) of RANGE_ROWS rows vs one UPDATE of a copy of the
#      table (target <= 1.5x), with the plan of a range's UPDATE.
#
#   ROWS=10000000 ARRAY=1000000 E2E=1000000 RANGE_ROWS=10000000 bash bench/bigbatch.sh
#
# Not run by the test suite (minutes).  Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROWS=${ROWS:-10000000}
ARRAY=${ARRAY:-1000000}
E2E=${E2E:-1000000}
RANGE_ROWS=${RANGE_ROWS:-10000000}
WORKERS=${WORKERS:-10}
ONLY=${ONLY:-1 3 4 5}	# sections to run (1 includes 2)
want() { [[ " $ONLY " == *" $1 "* ]]; }

log() { echo "[$(date -u +%T)] $*" >&2; }
trap bench_cluster_stop EXIT
bench_cluster_start "$WORKERS"
log "cluster on port $BENCH_PORT, $WORKERS workers"

anon() {	# sum of the workers' RssAnon, kB
	local s=0 p
	for p in $(bq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow worker'"); do
		s=$((s + $(awk '/^RssAnon/ { print $2 }' /proc/"$p"/status)))
	done
	echo "$s"
}
secs() { bq -c "SELECT round(extract(epoch FROM $1)::numeric, 3)"; }

start_ms=- first_item=- mat_s=- total=0 ins_s=- anon_before=0 anon_after=0
arr_ms=- q_s=- m_s=- anon_e2e_before=0 anon_e2e_after=0 ranges_s=- single_s=- check=- plan=-
# --- 1 + 2: a query source over ROWS rows, its items held back by a throttle
want 1 || ROWS=$E2E
log "creating src ($ROWS rows)"
bq <<SQL
CREATE TABLE src (id bigint PRIMARY KEY);
INSERT INTO src SELECT g FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE src;
-- a table of the same shape as batchflow.item, for the plain INSERT
CREATE TABLE item_copy (LIKE batchflow.item INCLUDING ALL);
SELECT bf_register('q_hold', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel",
  "concurrency": 10, "maxItemsPerSecond": 0.001, "inputSource": {"query": "SELECT id FROM src"},
  "children": [{"id": "noop", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
CHECKPOINT;
SQL
if want 1; then
anon_before=$(anon)
start_out=$(bq <<'SQL'
\timing on
SELECT bf_start('q_hold');
SQL
)
run=$(echo "$start_out" | head -1)
start_ms=$(echo "$start_out" | grep -o 'Time: [0-9.]*' | awk '{ print $2 }')
log "run $run started; waiting for materialisation"
for _ in $(seq 1 36000); do
	[ "$(bq -c "SELECT count(*) FROM batchflow.loop_fill WHERE run_id = $run")" = 0 ] && break
	sleep 0.1
done
anon_after=$(anon)
read -r first_item mat_s total <<<"$(bq -F ' ' -c "
SELECT round(extract(epoch FROM (SELECT min(i.started_at) FROM batchflow.item i WHERE i.run_id = r.id AND i.started_at IS NOT NULL)
                                  - pg_xact_commit_timestamp(r.xmin))::numeric, 3),
       round(extract(epoch FROM pg_xact_commit_timestamp(l.xmin) - pg_xact_commit_timestamp(r.xmin))::numeric, 3),
       l.total
  FROM batchflow.run r JOIN batchflow.loop l ON l.run_id = r.id WHERE r.id = $run")"
log "materialised $total items in $mat_s s; first item $first_item s after commit"
bq -c "CHECKPOINT"
ins_s=$(bq <<SQL | grep -o 'Time: [0-9.]*' | tail -1 | awk '{ printf "%.3f", $2 / 1000 }'
\timing on
INSERT INTO item_copy (loop_ref, idx, run_id, item) SELECT 1, (id - 1)::int, 1, to_jsonb(id) FROM src;
SQL
)
log "plain INSERT of $ROWS rows: $ins_s s"
bq -c "TRUNCATE batchflow.item_error, batchflow.item; DELETE FROM batchflow.run WHERE id = $run; DROP TABLE item_copy"
bq -c "VACUUM batchflow.item"
fi

# --- 3: bf_start of a JSON array of ARRAY elements
if want 3; then
bq <<SQL
CREATE TABLE arr_input AS SELECT jsonb_build_object('items', jsonb_agg(g)) AS input FROM generate_series(0, $ARRAY - 1) g;
SELECT bf_register('arr', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel",
  "concurrency": 10, "inputSource": {"variable": "items"},
  "children": [{"id": "noop", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SQL
arr_ms=$(bq <<'SQL' | grep -o 'Time: [0-9.]*' | tail -1 | awk '{ print $2 }'
\timing on
SELECT bf_start('arr', (SELECT input FROM arr_input));
SQL
)
arr_run=$(bq -c "SELECT max(id) FROM batchflow.run")
log "bf_start of a $ARRAY-element array: $arr_ms ms; letting it finish"
bench_wait "$arr_run" '60 minutes'
bq -c "TRUNCATE batchflow.item_error, batchflow.item; DELETE FROM batchflow.run"
bq -c "VACUUM batchflow.item"
fi

# --- 4: end to end, E2E no-op items: from a query vs already materialised
if want 4; then
bq -c "SELECT bf_register('arr', '{\"nodes\": [{\"id\": \"each\", \"type\": \"loop\", \"loopType\": \"parallel\", \"concurrency\": 10, \"inputSource\": {\"variable\": \"items\"}, \"children\": [{\"id\": \"noop\", \"type\": \"activity\", \"activity\": \"sql\", \"sql\": \"SELECT 1\"}]}]}')" >/dev/null
bq <<SQL
SELECT bf_register('q_e2e', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel",
  "concurrency": 10, "inputSource": {"query": "SELECT id FROM src WHERE id <= (\$1 ->> ''n'')::bigint"},
  "children": [{"id": "noop", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
CREATE TABLE e2e_input AS SELECT jsonb_build_object('items', jsonb_agg(g)) AS input FROM generate_series(1, $E2E) g;
SQL
anon_e2e_before=$(anon)
q_run=$(bq -c "SELECT bf_start('q_e2e', '{\"n\": $E2E}')")
bench_wait "$q_run" '120 minutes'
q_s=$(bench_elapsed "$q_run")
anon_e2e_after=$(anon)
log "query source, $E2E no-op items: $q_s s"
bq -c "TRUNCATE batchflow.item_error, batchflow.item; DELETE FROM batchflow.run"
bq -c "VACUUM batchflow.item"
# Already materialised: the array path of 0.1 (items inserted by bf_start),
# with the lazy threshold raised for this comparison only.
bq -c "CREATE OR REPLACE FUNCTION batchflow._lazy_threshold() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 2147483647'"
m_run=$(bq -c "SELECT bf_start('arr', (SELECT input FROM e2e_input))")
m_committed=$(bq -c "SELECT clock_timestamp()")	# bf_start has committed: items all there
bench_wait "$m_run" '120 minutes'
m_s=$(bq -c "SELECT round(extract(epoch FROM finished_at - '$m_committed')::numeric, 3) FROM batchflow.run WHERE id = $m_run")
bq -c "CREATE OR REPLACE FUNCTION batchflow._lazy_threshold() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 10000'"
log "already materialised, $E2E no-op items: $m_s s (after bf_start's commit)"
bq -c "TRUNCATE batchflow.item_error, batchflow.item; DELETE FROM batchflow.run"
bq -c "VACUUM batchflow.item"
fi

# --- 5: key-range backfill vs one UPDATE
if want 5; then
log "creating two tables of $RANGE_ROWS rows"
bq <<SQL
CREATE TABLE t_ranges (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0, pad text NOT NULL DEFAULT 'x');
INSERT INTO t_ranges (id) SELECT g FROM generate_series(1, $RANGE_ROWS) g;
CREATE TABLE t_single (LIKE t_ranges INCLUDING ALL);
INSERT INTO t_single SELECT * FROM t_ranges;
VACUUM ANALYZE t_ranges; VACUUM ANALYZE t_single;
SELECT bf_register('backfill', '{"nodes": [{"id": "fill", "type": "loop", "loopType": "parallel",
  "concurrency": 4, "inputSource": {"keyRanges": {"table": "public.t_ranges", "key": "id", "size": 10000}},
  "children": [{"id": "chunk", "type": "activity", "activity": "sql",
    "sql": "UPDATE t_ranges SET v = v + 1 WHERE id >= (\$1 ->> ''from'')::bigint AND (\$1 ->> ''to'' IS NULL OR id < (\$1 ->> ''to'')::bigint)"}]}]}');
CHECKPOINT;
SQL
single_s=$(bq <<'SQL' | grep -o 'Time: [0-9.]*' | tail -1 | awk '{ printf "%.3f", $2 / 1000 }'
\timing on
UPDATE t_single SET v = v + 1;
SQL
)
bq -c "CHECKPOINT"
log "one UPDATE: $single_s s"
b_run=$(bq -c "SELECT bf_start('backfill')")
bench_wait "$b_run" '120 minutes'
ranges_s=$(bench_elapsed "$b_run")
log "key-range backfill: $ranges_s s"
check=$(bq -c "SELECT count(*) FILTER (WHERE v <> 1) FROM t_ranges")
plan=$(bq <<'SQL'
PREPARE r(jsonb) AS UPDATE t_ranges SET v = v + 1 WHERE id >= ($1 ->> 'from')::bigint AND ($1 ->> 'to' IS NULL OR id < ($1 ->> 'to')::bigint);
EXPLAIN (COSTS OFF) EXECUTE r('{"from": 1, "to": 10001}');
SQL
)
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
cat <<EOF2

## bench/bigbatch.sh ($(date -u +%F), $WORKERS workers, load $(cut -d' ' -f1-3 /proc/loadavg))

| # | measure | figure | target |
|---|---|---|---|
| 1 | bf_start of a query source over $ROWS rows | ${start_ms} ms | <= 50 ms |
| 1 | first item's start after bf_start's commit | ${first_item} s | <= 1 s |
| 2 | materialisation of $total items by the workers | ${mat_s} s ($(awk -v n="$total" -v s="$mat_s" 'BEGIN { printf "%.0f", n / s }') rows/s) | |
| 2 | plain INSERT INTO t SELECT of the same rows (table shaped like batchflow.item) | ${ins_s} s ($(awk -v n="$ROWS" -v s="$ins_s" 'BEGIN { printf "%.0f", n / s }') rows/s) | |
| 2 | materialisation rate / INSERT rate | $(ratio "$ins_s" "$mat_s")x | >= 0.8x |
| 2 | workers' private memory (RssAnon, all $WORKERS) before -> after materialisation | ${anon_before} -> ${anon_after} kB ($(( (anon_after - anon_before) / WORKERS )) kB per worker) | < 1 MB growth |
| 3 | bf_start of a $ARRAY-element JSON array | ${arr_ms} ms | <= 1000 ms |
| 4 | $E2E no-op items from a query, bf_start to end | ${q_s} s | |
| 4 | the same items already materialised, bf_start's commit to end | ${m_s} s | |
| 4 | query / materialised | $(ratio "$q_s" "$m_s")x | <= 1.3x |
| 4 | workers' private memory before -> after the query run | ${anon_e2e_before} -> ${anon_e2e_after} kB ($(( (anon_e2e_after - anon_e2e_before) / WORKERS )) kB per worker) | < 1 MB growth |
| 5 | key-range backfill of $RANGE_ROWS rows (size 10,000, cap 4) | ${ranges_s} s (rows not updated exactly once: $check) | |
| 5 | one UPDATE of a copy of the table | ${single_s} s | |
| 5 | backfill / one UPDATE | $(ratio "$ranges_s" "$single_s")x | <= 1.5x |

Plan of a range's UPDATE (a prepared statement, as the workers run it):

\`\`\`
$plan
\`\`\`
EOF2
