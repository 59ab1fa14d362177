#!/bin/bash
# bench/core.sh - the three headline figures of bench/run.sh, in a few
# minutes, printed as "name value" lines (no document is written):
#
#   speedup_c4, speedup_c10   100 items of 100 ms of SQL work: sequential
#                             run time over the run time at cap 4 / cap 10
#   noop_items_per_s          10000 no-op items (SELECT 1) at cap 10
#   start_latency_ms          median, over N runs of one item, from the
#                             bf_start commit to the item's start
#
#   bash bench/core.sh [N_LATENCY]      (default 30)
#
# On a throwaway cluster with 20 workers and track_commit_timestamp (as
# bench/run.sh).  The PostgreSQL on PATH (and the batchflow installed in
# it) is the one measured, so two installations can be compared by running
# this once under each PATH, alternately, on the same machine.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N_LAT=${1:-30}

trap bench_cluster_stop EXIT
bench_cluster_start 20 >/dev/null
bq -c "CREATE TABLE bench_mark (run_id bigint)"
bench_register core_seq sequential 1 "SELECT pg_sleep(0.1)"
bench_register core_c4 parallel 4 "SELECT pg_sleep(0.1)"
bench_register core_c10 parallel 10 "SELECT pg_sleep(0.1)"
bench_register core_noop parallel 10 "SELECT 1"
bench_register core_one parallel 1 "SELECT 1"

run_secs() {	# run_secs WORKFLOW N: seconds from start to end of one run
	local run
	run=$(bench_start "$1" "$2")
	bench_wait "$run" '10 minutes'
	bq -c "SELECT extract(epoch FROM finished_at - started_at) FROM batchflow.runs WHERE id = $run"
}

seq=$(run_secs core_seq 100)
c4=$(run_secs core_c4 100)
c10=$(run_secs core_c10 100)
noop=$(run_secs core_noop 10000)
for _ in $(seq 1 "$N_LAT"); do
	run=$(bq -c "WITH r AS (SELECT bf_start('core_one', '{\"items\": [0]}') AS id) INSERT INTO bench_mark SELECT id FROM r RETURNING run_id")
	bench_wait "$run" '1 minute'
done
lat=$(bq -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.started_at - pg_xact_commit_timestamp(m.xmin)) * 1000))::numeric, 3)
               FROM bench_mark m JOIN batchflow.item i ON i.run_id = m.run_id")
awk -v s="$seq" -v a="$c4" -v b="$c10" -v n="$noop" -v l="$lat" 'BEGIN {
	printf "speedup_c4 %.2f\nspeedup_c10 %.2f\nnoop_items_per_s %.0f\nstart_latency_ms %s\n", s / a, s / b, 10000 / n, l }'
echo "load_average $(cut -d' ' -f1 /proc/loadavg)"
