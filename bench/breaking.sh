#!/bin/bash
# bench/breaking.sh - raise the load until something gives, on one server.
# Long (tens of minutes); never run by CI.
#
#   bash bench/breaking.sh [--only "runs items limit workers"] [--dat DIR] [--quick]
#
# Scenarios, each on a fresh throwaway cluster (bench/lib.sh):
#   runs     K concurrent runs of 100 no-op items at cap 5 (K = 10, 100,
#            300, 1000; 20 workers), all started by one statement: wall
#            time, items/s, workers' private memory; every item must
#            succeed exactly once.
#   items    one run of N no-op items at cap 10 (N = 100k, 1M, 5M; 20
#            workers): bf_start time and its backend's peak memory, then
#            items/s over the first 60 s of execution.
#   limit    batchflow.max_items_per_run + 1 items (the limit lowered to
#            100,000 for the session), which must be refused with a clear
#            error (SQLSTATE 54000), nothing created.
#   workers  max_workers W = 20, 64, 128: 50 runs of 400 items of 5 ms
#            at cap W/10 (all workers busy): items/s, the server's
#            private memory, and whether every worker started (W + 8
#            background-worker slots, max_connections 300); the
#            environment variable BREAK_WORKERS="..." sets the sizes.
# HTTP in flight is bench/http.sh --caps "200 1000".
#
# Prints one line per point, writes the data (default docs/img/break-*.dat)
# and plots them with gnuplot (docs/img/break-*.png).
set -euo pipefail
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"

ONLY="runs items limit workers"
DAT=docs/img
QUICK=0
while [ $# -gt 0 ]; do
	case $1 in
	--only) ONLY=$2; shift ;;
	--dat) DAT=$2; shift ;;
	--quick) QUICK=1 ;;
	*) echo "usage: bench/breaking.sh [--only \"runs items limit workers\"] [--dat DIR] [--quick]" >&2; exit 2 ;;
	esac
	shift
done
want() { [[ " $ONLY " == *" $1 "* ]]; }
mkdir -p "$DAT"
trap bench_cluster_stop EXIT
T_BEGIN=$(date +%s)
log() { echo "[$(($(date +%s) - T_BEGIN))s] $*" >&2; }
log "load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"

# Private memory (RssAnon, kB) of all batchflow workers, and of all
# server processes.
anon() {
	local pids p t=0 a
	pids=$(bq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = '$1'")
	for p in $pids; do
		a=$(awk '/^RssAnon/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
		t=$((t + ${a:-0}))
	done
	echo $t
}
server_anon() {
	local pm t=0 a
	pm=$(head -1 "$BENCH_DIR/data/postmaster.pid")
	for p in $pm $(pgrep -P "$pm"); do
		a=$(awk '/^RssAnon/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
		t=$((t + ${a:-0}))
	done
	echo $t
}
restart_with() {	# restart_with "conf lines"
	bench_cluster_stop
	BENCH_PORT=
	bench_cluster_start 20
	printf '%s\n' "$1" >>"$BENCH_DIR/data/postgresql.conf"
	bash scripts/cluster.sh stop "$BENCH_DIR"
	bash scripts/cluster.sh start "$BENCH_DIR" "$BENCH_PORT" postgres
}

# 1. Concurrent runs -----------------------------------------------------------
if want runs; then
	KS="10 100 300 1000"
	[ $QUICK = 1 ] && KS="10 100"
	restart_with ""
	bench_wait_workers 20
	bench_register noop_c5 parallel 5 "SELECT 1"
	echo "# runs items wall_s items_per_s workers_anon_kb" >"$DAT/break-runs.dat"
	for k in $KS; do
		a0=$(anon 'batchflow worker')
		t0=$(date +%s.%N)
		runs=$(bq -c "SELECT min(r), max(r) FROM (SELECT bf_start('noop_c5', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, 99) g))) AS r
		                                            FROM generate_series(1, $k)) s" | tr '|' ' ')
		read -r lo hi <<<"$runs"
		peak=$a0
		while :; do
			open=$(bq -c "SELECT count(*) FROM batchflow.run WHERE id BETWEEN $lo AND $hi AND finished_at IS NULL")
			a=$(anon 'batchflow worker'); [ "$a" -gt "$peak" ] && peak=$a
			[ "$open" = 0 ] && break
			sleep 1
		done
		read -r wall ok bad <<<"$(bq -F ' ' -c "SELECT round(extract(epoch FROM max(r.finished_at) - min(r.started_at))::numeric, 2),
		      (SELECT count(*) FROM batchflow.item WHERE run_id BETWEEN $lo AND $hi AND status = 'succeeded' AND attempts = 1),
		      (SELECT count(*) FROM batchflow.item WHERE run_id BETWEEN $lo AND $hi AND NOT (status = 'succeeded' AND attempts = 1))
		 FROM batchflow.run r WHERE r.id BETWEEN $lo AND $hi")"
		ips=$(awk -v n="$ok" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
		echo "$k $((k * 100)) $wall $ips $peak" >>"$DAT/break-runs.dat"
		log "runs $k x 100 items: $ok succeeded once, $bad other; wall $wall s, $ips items/s; workers' private memory $a0 -> peak $peak kB"
		[ "$bad" = 0 ] || log "runs $k: $bad items not succeeded exactly once"
		bq -c "VACUUM batchflow.item, batchflow.loop, batchflow.run" >/dev/null
	done
fi

# 2. Items per run ---------------------------------------------------------------
if want items; then
	NS="100000 1000000 5000000"
	[ $QUICK = 1 ] && NS="100000 1000000"
	restart_with "work_mem = 64MB"
	bench_wait_workers 20
	bench_register noop_c10 parallel 10 "SELECT 1"
	echo "# items bf_start_s backend_peak_kb items_per_s_first_60s workers_anon_kb" >"$DAT/break-items.dat"
	for n in $NS; do
		bq -c "DROP TABLE IF EXISTS big_input" -c "CREATE TABLE big_input AS SELECT jsonb_build_object('items', jsonb_agg(g)) AS j FROM generate_series(0, $n - 1) g"
		# The starting backend's peak memory, from its own /proc entry.
		out=$(bq <<'SQL'
SELECT clock_timestamp() AS t0 \gset
SELECT bf_start('noop_c10', j) AS run FROM big_input \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 2) AS secs \gset
SELECT substring(pg_read_file('/proc/' || pg_backend_pid() || '/status') FROM 'VmHWM:\s*(\d+)') AS peak \gset
SELECT :run, :secs, :'peak';
SQL
)
		read -r run secs peak <<<"$(echo "$out" | tr '|' ' ')"
		c0=$(bq -c "SELECT count(*) FROM batchflow.item WHERE run_id = $run AND status = 'succeeded'")
		sleep 60
		c1=$(bq -c "SELECT count(*) FROM batchflow.item WHERE run_id = $run AND status = 'succeeded'")
		ips=$(( (c1 - c0) / 60 ))
		wa=$(anon 'batchflow worker')
		echo "$n $secs $peak $ips $wa" >>"$DAT/break-items.dat"
		log "items $n: bf_start $secs s (its backend's peak RSS ${peak} kB), then $ips items/s over 60 s; workers' private memory $wa kB"
		bq -c "SELECT bf_cancel($run)" >/dev/null
		bq -c "SELECT bf_wait($run, '10 minutes')" >/dev/null
		bq -c "DELETE FROM batchflow.run WHERE id = $run" -c "VACUUM batchflow.item" >/dev/null
	done
	bq -c "DROP TABLE IF EXISTS big_input"
fi

# 2b. The item limit -------------------------------------------------------------------
if want limit; then
	restart_with ""
	bench_wait_workers 20
	bench_register noop_c10 parallel 10 "SELECT 1"
	# The limit: batchflow.max_items_per_run + 1 items must be refused with
	# a clear error and create nothing.  With the default limit (10M) the
	# input alone takes minutes to build here, so the limit is lowered to
	# 100,000 for this session (the check is the same).
	err=$(bq -v VERBOSITY=verbose -c "SET batchflow.max_items_per_run = 100000" \
		-c "SELECT bf_start('noop_c10', jsonb_build_object('items', jsonb_agg(g))) FROM generate_series(0, 100000) g" 2>&1 || true)
	log "items 100001 with batchflow.max_items_per_run = 100000: $(echo "$err" | head -3 | tr '\n' ' ')"
	log "runs created by it: $(bq -c "SELECT count(*) FROM batchflow.run WHERE started_at > now() - interval '1 minute'")"
fi

# 3. Workers ------------------------------------------------------------------------
if want workers; then
	WS=${BREAK_WORKERS:-20 64 128}
	[ $QUICK = 1 ] && WS="20 64"
	echo "# workers items_per_s server_anon_kb workers_up" >"$DAT/break-workers.dat"
	for w in $WS; do
		restart_with "batchflow.max_workers = $w
batchflow.max_concurrency = 1000
max_worker_processes = $((w + 8))
max_connections = 300"
		up=0
		for _ in $(seq 1 300); do
			up=$(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker'")
			[ "$up" -ge "$w" ] && break
			sleep 0.2
		done
		cap=$((w / 10))
		bench_register "w5ms_$w" parallel "$cap" "SELECT pg_sleep(0.005)"
		runs=$(bq -c "SELECT min(r), max(r) FROM (SELECT bf_start('w5ms_$w', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, 399) g))) AS r
		                                            FROM generate_series(1, 50)) s" | tr '|' ' ')
		read -r lo hi <<<"$runs"
		peak=0
		while :; do
			open=$(bq -c "SELECT count(*) FROM batchflow.run WHERE id BETWEEN $lo AND $hi AND finished_at IS NULL")
			a=$(server_anon); [ "$a" -gt "$peak" ] && peak=$a
			[ "$open" = 0 ] && break
			sleep 1
		done
		read -r wall ok <<<"$(bq -F ' ' -c "SELECT round(extract(epoch FROM max(finished_at) - min(started_at))::numeric, 2),
		        (SELECT count(*) FROM batchflow.item WHERE run_id BETWEEN $lo AND $hi AND status = 'succeeded')
		   FROM batchflow.run WHERE id BETWEEN $lo AND $hi")"
		ips=$(awk -v n="$ok" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
		echo "$w $ips $peak $up" >>"$DAT/break-workers.dat"
		log "workers $w ($up up): 20000 items of 5 ms at cap $cap x 50 runs: $ok succeeded, wall $wall s, $ips items/s; server private memory peak $peak kB"
	done
fi
# Charts -------------------------------------------------------------------------------
plot() {	# plot NAME TITLE XLABEL "plot clauses"
	[ -s "$DAT/break-$1.dat" ] || return 0
	gnuplot <<GP
set terminal pngcairo size 720,480 font ",11" noenhanced
set output '$DAT/break-$1.png'
set title "$2"
set xlabel "$3"
set grid
set key top left
set yrange [0:*]
set y2range [0:*]
set ytics nomirror
set y2tics
$4
GP
}
plot runs "Concurrent runs of 100 no-op items at cap 5, 20 workers" "runs started together" \
	"set logscale x; set ylabel 'items/s'; set y2label 'workers private memory (MB)'; plot '$DAT/break-runs.dat' using 1:4 with linespoints lw 2 pt 7 title 'items/s', '' using 1:(\$5/1024) axes x1y2 with linespoints lw 2 pt 5 title 'memory (MB)'"
plot items "One run of N no-op items at cap 10, 20 workers" "items in the run" \
	"set logscale x; set ylabel 'seconds'; set y2label 'items/s (first 60 s)'; plot '$DAT/break-items.dat' using 1:2 with linespoints lw 2 pt 7 title 'bf_start (s)', '' using 1:4 axes x1y2 with linespoints lw 2 pt 5 title 'items/s'"
plot workers "Worker pool size: 20,000 items of 5 ms, all workers busy" "batchflow.max_workers" \
	"set ylabel 'items/s'; set y2label 'server private memory (MB)'; plot '$DAT/break-workers.dat' using 1:2 with linespoints lw 2 pt 7 title 'items/s', '' using 1:(\$3/1024) axes x1y2 with linespoints lw 2 pt 5 title 'memory (MB)'"
log "done"
exit 0
}
