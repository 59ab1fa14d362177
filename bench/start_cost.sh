#!/bin/bash
# bench/start_cost.sh - what one bf_start costs the server, without the
# workers and the commits around it:
#
#   cold   N fresh sessions (one psql connection each) time their first
#          and their second bf_start of a 5-item run (\timing, client
#          side); the difference of the medians is what a new session pays
#          once (catalog caches, plans, until 0.2.0 the compilation of the
#          PL/pgSQL _advance);
#   warm   one session calls bf_start of a 5-item run M times in one
#          transaction and rolls it back (nothing reaches the workers):
#          the time per call, the median of 5 such transactions.
#
#   bash bench/start_cost.sh [N] [M]      (default N = 30, M = 1000)
#
# Its own throwaway cluster (bench/lib.sh) with the PostgreSQL install that
# is first on PATH: run it once per install, alternately, for a before and
# after on a shared machine.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=${1:-30}
M=${2:-1000}
trap bench_cluster_stop EXIT
bench_cluster_start 4 >/dev/null
bench_register cost_c5 parallel 5 "SELECT 1" >/dev/null
CALL="bf_start('cost_c5', '{\"items\": [1, 2, 3, 4, 5]}')"
START="SELECT $CALL"
med() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# A first session, so that no measured one pays for the server's first use
# of the tables.
bq -c "$START" >/dev/null

: >"$BENCH_WORK/cold.txt"
for _ in $(seq 1 "$N"); do
	printf '%s\n' '\timing on' "$START \\g /dev/null" "$START \\g /dev/null" | bq |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | paste -sd' ' >>"$BENCH_WORK/cold.txt"
done
first=$(cut -d' ' -f1 "$BENCH_WORK/cold.txt" | med)
second=$(cut -d' ' -f2 "$BENCH_WORK/cold.txt" | med)

: >"$BENCH_WORK/warm.txt"
for _ in 1 2 3 4 5; do
	printf '%s\n' 'BEGIN;' '\timing on' \
		"SELECT count($CALL) FROM generate_series(1, $M) \\g /dev/null" '\timing off' 'ROLLBACK;' | bq |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk -v m="$M" '{ printf "%.4f\n", $1 / m }' >>"$BENCH_WORK/warm.txt"
done
warm=$(med <"$BENCH_WORK/warm.txt")

echo "bf_start of a 5-item run, load $(cut -d' ' -f1 /proc/loadavg) ($(pg_config --bindir)):"
echo "  cold: first in a fresh session $first ms, second $second ms (medians of $N sessions), difference $(awk -v a="$first" -v b="$second" 'BEGIN { printf "%.2f", a - b }') ms"
echo "  warm: $warm ms per call ($M calls in one transaction, rolled back; median of 5)"
