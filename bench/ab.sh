#!/bin/bash
# bench/ab.sh - before/after on a shared machine: bench/goals.sh against
# two PostgreSQL installs holding two builds of batchflow, interleaved
# (A, B, A, B, ...), so that both see the same load.
#
#   bash bench/ab.sh A_BINDIR B_BINDIR [--rounds N] [goals.sh options]
#
# A_BINDIR and B_BINDIR are the bin directories of the two installs (for
# example two copies made by scripts/private-pg.sh, each with its own
# `make install`).  Each round runs bench/goals.sh --reps 1 once with each
# install first on PATH; the table gives, per figure, the median over the
# rounds for A and for B.  Default 3 rounds.  Extra options (--goals,
# --seconds, --no-peer) go to bench/goals.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
A=${1:?usage: bench/ab.sh A_BINDIR B_BINDIR [--rounds N] [goals.sh options]}
B=${2:?usage: bench/ab.sh A_BINDIR B_BINDIR [--rounds N] [goals.sh options]}
shift 2
ROUNDS=3
if [ "${1:-}" = --rounds ]; then ROUNDS=$2; shift 2; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/batchflow-ab.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "A: $A ($(ls -l --time-style=+%H:%M "$A/../lib/batchflow.so" 2>/dev/null | awk '{ print $6 }') build)"
echo "B: $B"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
for r in $(seq 1 "$ROUNDS"); do
	for side in A B; do
		dir=$A
		[ $side = B ] && dir=$B
		PATH="$dir:$PATH" bash "$ROOT/bench/goals.sh" --reps 1 --tsv "$WORK/$side.$r.tsv" "$@" >"$WORK/$side.$r.out" 2>&1 ||
			{ echo "round $r side $side failed:"; tail -5 "$WORK/$side.$r.out"; exit 1; }
		echo "round $r $side: $(grep -c . "$WORK/$side.$r.tsv") figures, load $(cut -d' ' -f1 /proc/loadavg)"
	done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-32s %14s %14s %8s\n' figure "A (median)" "B (median)" "B/A"
cat "$WORK"/A.*.tsv | cut -f1 | sort -u | while read -r k; do
	a=$(cat "$WORK"/A.*.tsv | awk -F'\t' -v k="$k" '$1 == k { print $3 }' | sort -g |
		awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	b=$(cat "$WORK"/B.*.tsv 2>/dev/null | awk -F'\t' -v k="$k" '$1 == k { print $3 }' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	printf '%-32s %14s %14s %8s\n' "$k" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a + 0 != 0 && b != "-") printf "%.2f", b / a; else print "-" }')"
done
