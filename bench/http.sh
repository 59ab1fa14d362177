#!/bin/bash
# bench/http.sh - HTTP activity throughput at loop caps 5, 50 and 200
# against a local endpoint with a fixed latency, on a throwaway cluster.
#
#   bash bench/http.sh [--reps N] [--latency MS] [--items N] [--caps "5 50 200"]
#                      [--server c|async|threaded] [--tsv FILE] [--keep]
#
# The endpoint is bench/http_sleep_server.c (--server c, the default:
# one epoll loop in C, built with cc into a temporary file),
# bench/http_sleep_server.py (--server async: one asyncio event loop) or
# test/http_server.py (--server threaded, a thread per connection), on
# 127.0.0.1, answering /sleep?ms=MS after MS ms (default 100) and
# counting how many requests wait at once.  For each cap:
#
#   1. the server without batchflow: the same number of requests, cap at a
#      time, over keep-alive connections, sent by the C server's own load
#      client (--server c) or by bench/http_load.py (Python, which at high
#      caps is the client's limit as much as the server's); the server's
#      CPU time per request, measured during the batchflow runs (srv
#      cpu/it), tells how much of the machine the endpoint really takes;
#   2. batchflow: a parallel loop with concurrency = cap and one http child
#      (GET /sleep?ms=MS) over the items (200 for cap 5, else 1000 or 5 x cap,
#      or --items); throughput = items / (last item's end - first item's
#      start), compared with the ideal cap / latency.  The server's peak
#      concurrency must be exactly the cap, and its request count the
#      number of items (every run must succeed with no retry).
#
# Each figure is the median over --reps repetitions (default 3), with the
# min and max.  The goal of issue 5 is a ratio >= 90 % of cap / latency.
# The cluster (bench/lib.sh, 10 workers) gets batchflow.max_concurrency =
# the largest cap (at least 200) in postgresql.conf.  --tsv FILE also writes one line per cap:
#   cap items latency_ms rate_median rate_min rate_max ideal ratio peak
#   server_alone_rate bf_cpu_ms_per_item server_cpu_ms_per_item
# Exits non-zero when a run fails, a peak differs from its cap or the
# request count is off; a ratio below 90 % is reported, not fatal.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"

REPS=3
LATENCY=100
ITEMS=
CAPS="5 50 200"
SERVER=c
TSV=
while [ $# -gt 0 ]; do
	case $1 in
	--reps) REPS=$2; shift ;;
	--latency) LATENCY=$2; shift ;;
	--items) ITEMS=$2; shift ;;
	--caps) CAPS=$2; shift ;;
	--server) SERVER=$2; shift ;;
	--tsv) TSV=$2; shift ;;
	--keep) BENCH_KEEP=1 ;;
	*) echo "usage: bench/http.sh [--reps N] [--latency MS] [--items N] [--caps \"5 50 200\"] [--server c|async|threaded] [--tsv FILE] [--keep]" >&2
	   exit 2 ;;
	esac
	shift
done
SRV_BIN=
case $SERVER in
c)
	# bench/http_sleep_server.c, built here: an epoll loop in C, and its
	# own load client for the endpoint-alone figure.
	SRV_BIN=$(mktemp "${TMPDIR:-/tmp}/bf-http-srv.XXXXXX")
	cc -O2 -o "$SRV_BIN" bench/http_sleep_server.c || { echo "cannot build bench/http_sleep_server.c" >&2; exit 1; }
	SERVER_PY=bench/http_sleep_server.c ;;
async) SERVER_PY=bench/http_sleep_server.py ;;
threaded) SERVER_PY=test/http_server.py ;;
*) echo "--server is c, async or threaded" >&2; exit 2 ;;
esac

SERVER_PID=
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
	[ -n "$SRV_BIN" ] && rm -f "$SRV_BIN"
	bench_cluster_stop
}
trap cleanup EXIT

# The endpoint, on a free port that it writes to a file.
PORT_FILE=$(mktemp -u "${TMPDIR:-/tmp}/bf-http-bench.XXXXXX")
if [ -n "$SRV_BIN" ]; then
	"$SRV_BIN" serve "$PORT_FILE" &
else
	python3 "$SERVER_PY" "$PORT_FILE" &
fi
SERVER_PID=$!
for _ in $(seq 1 100); do [ -s "$PORT_FILE" ] && break; sleep 0.1; done
[ -s "$PORT_FILE" ] || { echo "the HTTP server did not start" >&2; exit 1; }
BASE="http://127.0.0.1:$(cat "$PORT_FILE")"
rm -f "$PORT_FILE"
stats() { python3 -c 'import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1] + "/stats"))
print(s["peak"], s.get("paths", {}).get("/sleep", s["requests"]))' "$BASE"; }
reset() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/reset").read()' "$BASE"; }
# CPU time (ms, user + system) used so far by the given processes.
TICK_MS=$((1000 / $(getconf CLK_TCK)))
cpu_ms() {
	local t=0 p f
	for p in "$@"; do
		f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		f=${f##*) }	# the fields after the command name
		set -- $f
		t=$((t + (${12} + ${13}) * TICK_MS))
	done
	echo $t
}

bench_cluster_start
MAXCAP=$(printf '%s\n' $CAPS 200 | sort -n | tail -1)
echo "batchflow.max_concurrency = $MAXCAP" >>"$BENCH_DIR/data/postgresql.conf"
bq -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 50); do
	[ "$(bq -c 'SHOW batchflow.max_concurrency')" = "$MAXCAP" ] && break
	sleep 0.1
done
echo "== cluster $BENCH_DIR port $BENCH_PORT: $BENCH_WORKERS workers," \
	"max_concurrency $(bq -c 'SHOW batchflow.max_concurrency')," \
	"http_max_inflight $(bq -c 'SHOW batchflow.http_max_inflight') per worker"
echo "== endpoint $BASE/sleep?ms=$LATENCY ($SERVER_PY), $REPS repetition(s), $(nproc) cores," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg)"

# median min max of the numbers on stdin
mmm() { sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'; }

fail=0
[ -n "$TSV" ] && : >"$TSV"
printf '\n%5s %6s %10s %22s %8s %7s %6s %8s %10s %10s\n' cap items "server/s" "batchflow items/s" ideal ratio peak "start->end" "bf cpu/it" "srv cpu/it"
for cap in $CAPS; do
	n=${ITEMS:-$([ "$cap" -le 5 ] && echo 200 || echo $((cap * 5 > 1000 ? cap * 5 : 1000)))}
	ideal=$(awk -v c="$cap" -v l="$LATENCY" 'BEGIN { printf "%.1f", c * 1000 / l }')

	# 1. The server alone, same requests, same concurrency.
	alone=$(for _ in $(seq 1 "$REPS"); do
		reset
		if [ -n "$SRV_BIN" ]; then
			"$SRV_BIN" load 127.0.0.1 "${BASE##*:}" "/sleep?ms=$LATENCY" "$n" "$cap" | awk '{ print $8 }'
		else
			python3 bench/http_load.py "$BASE/sleep?ms=$LATENCY" "$n" "$cap" | awk '{ print $8 }'
		fi
	done | mmm | cut -d' ' -f1)

	# 2. batchflow.
	bq -v name="http_cap$cap" -v cap="$cap" -v url="$BASE/sleep?ms=$LATENCY&i={{index}}" <<'SQL' >/dev/null
SELECT bf_register(:'name', jsonb_build_object('nodes', jsonb_build_array(
         jsonb_build_object('id', 'calls', 'type', 'loop', 'loopType', 'parallel',
                            'concurrency', (:'cap')::int,
                            'inputSource', jsonb_build_object('variable', 'items'),
                            'children', jsonb_build_array(jsonb_build_object(
                               'id', 'get', 'type', 'activity', 'activity', 'http',
                               'url', :'url', 'timeoutMs', 30000))))));
SQL
	rates=()
	bfcpu=()
	svcpu=()
	peaks=()
	spans=()
	for rep in $(seq 1 "$REPS"); do
		reset
		pids=$(bq -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type IN ('batchflow worker', 'batchflow launcher')")
		bf0=$(cpu_ms $pids)
		sv0=$(cpu_ms "$SERVER_PID")
		run=$(bench_start "http_cap$cap" "$n")
		if ! bench_wait "$run" '10 minutes'; then
			fail=1
			continue
		fi
		bfcpu+=("$(awk -v a="$bf0" -v b="$(cpu_ms $pids)" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }')")
		svcpu+=("$(awk -v a="$sv0" -v b="$(cpu_ms "$SERVER_PID")" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n }')")
		read -r peak requests < <(stats)
		read -r rate span < <(bq -F ' ' -c "SELECT round($n / extract(epoch FROM max(i.finished_at) - min(i.started_at))::numeric, 1),
		                                            round(extract(epoch FROM r.finished_at - r.started_at)::numeric, 2)
		                                       FROM batchflow.item i JOIN batchflow.run r ON r.id = i.run_id
		                                      WHERE i.run_id = $run GROUP BY r.finished_at, r.started_at")
		attempts=$(bq -c "SELECT sum(attempts) FROM batchflow.item WHERE run_id = $run")
		if [ "$peak" != "$cap" ]; then
			echo "FAIL: cap $cap repetition $rep: the server saw a peak of $peak requests at once" >&2
			fail=1
		fi
		if [ "$requests" != "$n" ] || [ "$attempts" != "$n" ]; then
			echo "FAIL: cap $cap repetition $rep: $requests requests, $attempts attempts for $n items" >&2
			fail=1
		fi
		rates+=("$rate")
		peaks+=("$peak")
		spans+=("$span")
	done
	[ ${#rates[@]} -gt 0 ] || continue
	read -r med lo hi < <(printf '%s\n' "${rates[@]}" | mmm)
	peak=$(printf '%s\n' "${peaks[@]}" | sort -u | paste -sd/)
	span=$(printf '%s\n' "${spans[@]}" | mmm | cut -d' ' -f1)
	bfc=$(printf '%s\n' "${bfcpu[@]}" | mmm | cut -d' ' -f1)
	svc=$(printf '%s\n' "${svcpu[@]}" | mmm | cut -d' ' -f1)
	ratio=$(awk -v r="$med" -v i="$ideal" 'BEGIN { printf "%.1f", 100 * r / i }')
	printf '%5s %6s %10s %8s [%5s-%6s] %8s %6s%% %6s %8ss %8sms %8sms\n' "$cap" "$n" "$alone" "$med" "$lo" "$hi" "$ideal" "$ratio" "$peak" "$span" "$bfc" "$svc"
	[ -n "$TSV" ] && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$cap" "$n" "$LATENCY" "$med" "$lo" "$hi" "$ideal" "$ratio" "$peak" "$alone" "$bfc" "$svc" >>"$TSV"
	awk -v r="$ratio" 'BEGIN { exit !(r < 90) }' &&
		echo "      below the goal: $ratio % of cap / latency (goal >= 90 %)"
done
echo
echo "server/s: the endpoint driven by a load client instead of batchflow (with --server async or threaded a Python client:"
echo "  at high caps it is the client's limit too), same requests and concurrency;"
echo "items/s: items / (last item end - first item start), median [min-max];"
echo "ideal: cap / latency; peak: the server's largest number of requests at once;"
echo "start->end: bf_start to the run's end, median seconds;"
echo "bf cpu/it, srv cpu/it: CPU time (user + system) of the batchflow launcher and workers,"
echo "and of the endpoint, per item (median): with $(nproc) cores, the two together bound items/s."
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine slows every figure)"
exit $fail
