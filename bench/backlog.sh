#!/bin/bash
# bench/backlog.sh - how fast the workers drain a backlog of many small
# open runs, against the number of runs open at once.
#
#   bash bench/backlog.sh [--sizes "100 1000 3000"] [--workers 20]
#
# For each size K: K runs of 5 no-op items at cap 5 (the runs of goal 2's
# bf_start pgbench), all started by one statement, so K loops are open
# when the workers begin; prints the time from that commit to the last
# run's end and items/s.  If the cost of a claim grows with the number of
# open loops, items/s falls as K grows.  With --statements, the
# statements that took the most time over all sizes (pg_stat_statements,
# track = all: the workers' own SQL included) follow the table.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"
SIZES="100 1000 3000"
WORKERS=20
STMTS=0
while [ $# -gt 0 ]; do
	case $1 in
	--sizes) SIZES=$2; shift ;;
	--workers) WORKERS=$2; shift ;;
	--statements) STMTS=1 ;;
	*) echo "usage: bench/backlog.sh [--sizes \"100 1000 3000\"] [--workers N] [--statements]" >&2; exit 2 ;;
	esac
	shift
done
trap bench_cluster_stop EXIT
bench_cluster_start "$WORKERS" >/dev/null
if [ $STMTS = 1 ]; then
	cat >>"$BENCH_DIR/data/postgresql.conf" <<CONF
shared_preload_libraries = 'batchflow,pg_cron,pg_stat_statements'
pg_stat_statements.track = all
CONF
	bash scripts/cluster.sh stop "$BENCH_DIR"
	bash scripts/cluster.sh start "$BENCH_DIR" "$BENCH_PORT" postgres
	bench_wait_workers "$WORKERS"
	bq -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null
fi
bench_register five_c5 parallel 5 "SELECT 1"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $WORKERS workers, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
printf '%8s %10s %10s\n' runs seconds items/s
for k in $SIZES; do
	r0=$(bq -c "SELECT coalesce(max(id), 0) FROM batchflow.run")
	bq -c "SELECT count(bf_start('five_c5', '{\"items\": [1, 2, 3, 4, 5]}')) FROM generate_series(1, $k)" >/dev/null
	for _ in $(seq 1 3000); do
		[ "$(bq -c "SELECT count(*) FROM batchflow.run WHERE id > $r0 AND finished_at IS NULL")" = 0 ] && break
		sleep 0.1
	done
	read -r bad secs <<<"$(bq -F ' ' -c "SELECT count(*) FILTER (WHERE status <> 'succeeded'),
	                                         round(extract(epoch FROM max(finished_at) - min(started_at))::numeric, 2)
	                                    FROM batchflow.run WHERE id > $r0")"
	[ "$bad" = 0 ] || { echo "$bad of $k runs did not succeed" >&2; exit 1; }
	printf '%8s %10s %10s\n' "$k" "$secs" "$(awk -v k="$k" -v s="$secs" 'BEGIN { printf "%.0f", 5 * k / s }')"
done
if [ $STMTS = 1 ]; then
	echo
	echo "| calls | total ms | mean ms | statement |"
	echo "|---|---|---|---|"
	bq -c "SELECT format('| %s | %s | %s | %s |', calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3),
	                     replace(left(regexp_replace(query, '\\s+', ' ', 'g'), 140), '|', '\\|'))
	         FROM pg_stat_statements
	        WHERE query NOT LIKE '%pg_stat_%' AND query NOT LIKE '%count(*) FROM batchflow.run WHERE id >%'
	        ORDER BY total_exec_time DESC LIMIT 15"
fi
