#!/bin/bash
# bench/smoke.sh - a few seconds of the benchmarks, so they cannot rot.
#
# Starts its own throwaway cluster (bench/lib.sh), then:
#   - 20 items x 50 ms of SQL work at cap 1 and at cap 4: speedup;
#   - 2000 no-op INSERT items at cap 10: items/s, exactly 2000 rows.
# Prints the figures; exits non-zero if a run does not succeed, a count is
# wrong or a cap is exceeded.  Timings are not asserted (CI machines are
# noisy), except a very loose sanity ratio: cap 4 must beat cap 1 by 1.5x.
# Run it as root or as the postgres user, with batchflow installed.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fail=0
check() {	# check DESCRIPTION ACTUAL EXPECTED
	if [ "$2" = "$3" ]; then
		echo "ok: $1 ($2)"
	else
		echo "FAIL: $1: got '$2', expected '$3'"
		fail=1
	fi
}

trap bench_cluster_stop EXIT
t0=$(date +%s%N)
bench_cluster_start
echo "== cluster on port $BENCH_PORT, $BENCH_WORKERS workers"

bq -c "CREATE TABLE smoke_sink (id bigserial PRIMARY KEY, idx int NOT NULL)"
bench_register smoke_seq sequential 1 "SELECT pg_sleep(0.05)"
bench_register smoke_cap4 parallel 4 "SELECT pg_sleep(0.05)"
bench_register smoke_ins parallel 10 "INSERT INTO smoke_sink (idx) VALUES (\$2)"

declare -A secs
for wf in smoke_seq smoke_cap4 smoke_ins; do
	case $wf in smoke_ins) n=2000 ;; *) n=20 ;; esac
	run=$(bench_start $wf $n)
	if ! bench_wait "$run" '60 seconds'; then
		fail=1
		continue
	fi
	secs[$wf]=$(bench_elapsed "$run")
	check "$wf: items succeeded/failed/other" "$(bench_counts "$run")" "$n 0 0"
	case $wf in
	smoke_seq) check "$wf: max overlap" "$(bench_max_overlap "$run")" 1 ;;
	smoke_cap4)
		ov=$(bench_max_overlap "$run")
		[ "$ov" -le 4 ] && [ "$ov" -ge 2 ] && echo "ok: $wf: max overlap $ov (cap 4)" ||
			{ echo "FAIL: $wf: max overlap $ov, cap 4"; fail=1; }
		;;
	esac
done
check "smoke_ins: rows, distinct indexes" \
	"$(bq -F ' ' -c "SELECT count(*), count(DISTINCT idx) FROM smoke_sink")" "2000 2000"

if [ -n "${secs[smoke_seq]:-}" ] && [ -n "${secs[smoke_cap4]:-}" ]; then
	speedup=$(awk -v a="${secs[smoke_seq]}" -v b="${secs[smoke_cap4]}" 'BEGIN { printf "%.2f", a / b }')
	echo "figure: 20 x 50 ms: cap 1 ${secs[smoke_seq]} s, cap 4 ${secs[smoke_cap4]} s, speedup ${speedup}x (ideal 4x)"
	if ! awk -v s="$speedup" 'BEGIN { exit !(s >= 1.5) }'; then
		echo "FAIL: cap 4 is not even 1.5x faster than cap 1"
		fail=1
	fi
fi
if [ -n "${secs[smoke_ins]:-}" ]; then
	echo "figure: 2000 INSERT items at cap 10: ${secs[smoke_ins]} s, $(awk -v t="${secs[smoke_ins]}" 'BEGIN { printf "%d", 2000 / t }') items/s"
fi
echo "smoke total $(( ($(date +%s%N) - t0) / 1000000 )) ms"
if [ $fail -ne 0 ]; then
	echo "bench smoke: FAILED"
	tail -20 "$BENCH_DIR/server.log" 2>/dev/null || true
	exit 1
fi
echo "bench smoke: ok"
