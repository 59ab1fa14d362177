#!/bin/bash
# bench/notify_lock.sh - how many sessions wait for PostgreSQL's notify lock
# while pgbench -c 16 starts 5-item runs that the workers execute (goal 2's
# load), and how many bf_start per second that gives.
#
#   bash bench/notify_lock.sh [SECONDS]
#
# Samples pg_locks 15 times (every 0.4 s, from 2 s into the run) for
# waiters on the lock every notifying commit takes (object lock on
# pg_database, object 0) and prints their sum, pgbench's tps and the number
# of announcer processes at the end.
set -euo pipefail
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"
SECS=${1:-10}
trap bench_cluster_stop EXIT
bench_cluster_start 20 >/dev/null
bench_register five_c5 parallel 5 "SELECT 1" >/dev/null
echo "SELECT bf_start('five_c5', '{\"items\": [1, 2, 3, 4, 5]}');" >"$BENCH_WORK/start.sql"
pgbench -n -c 16 -j 2 -T "$SECS" -f "$BENCH_WORK/start.sql" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres postgres >"$BENCH_WORK/pgb.out" 2>&1 &
pid=$!
sleep 2
waiters=0
for _ in $(seq 1 15); do
	w=$(bq -c "SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND classid = 'pg_database'::regclass AND objid = 0 AND NOT granted")
	waiters=$((waiters + w))
	sleep 0.4
done
wait "$pid"
echo "notify-lock waiters summed over 15 samples: $waiters; bf_start/s: $(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$BENCH_WORK/pgb.out" | head -1); announcer processes: $(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow announcer'"); load $(cut -d' ' -f1-3 /proc/loadavg)"
}
