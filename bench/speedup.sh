#!/bin/bash
# bench/speedup.sh - the issue-3 speedup check, on its own: 100 items of
# 100 ms of SQL work (SELECT pg_sleep(0.1)) sequentially, at cap 4 and at
# cap 10, on a throwaway cluster with the default pool of 10 workers.
#
#   bash bench/speedup.sh [ROUNDS]     (default 3 rounds)
#
# Each round runs the three loops one after the other from one psql
# session and prints their run times (finished_at - started_at of
# batchflow.runs) and the speedups over the sequential run of the same
# round.  Goals: >= 3.97x at cap 4 and >= 9.85x at cap 10.  bench/run.sh
# measures the same with 20 workers among all its other scenarios.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/batchflow-speedup.XXXXXX")
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'bash "$ROOT/scripts/cluster.sh" stop "$WORK/c" >/dev/null 2>&1; rm -rf "$WORK"' EXIT

bash "$ROOT/scripts/cluster.sh" start "$WORK/c" "$PORT" >/dev/null
psql_() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- psql -h "$WORK/c" -p "$PORT" -U postgres -X -qAt "$@"
	else psql -h "$WORK/c" -p "$PORT" -U postgres -X -qAt "$@"; fi
}

for w in "speedup_1:sequential:1" "speedup_4:parallel:4" "speedup_10:parallel:10"; do
	IFS=: read -r name type cap <<<"$w"
	psql_ -c "SELECT bf_register('$name', '{\"nodes\": [{\"id\": \"each\", \"type\": \"loop\", \"loopType\": \"$type\", \"concurrency\": $cap,
	  \"inputSource\": {\"variable\": \"items\"},
	  \"children\": [{\"id\": \"work\", \"type\": \"activity\", \"activity\": \"sql\", \"sql\": \"SELECT pg_sleep(0.1)\"}]}]}')" >/dev/null
done
sleep 1

for round in $(seq 1 "$ROUNDS"); do
	psql_ <<'SQL' | awk -F'|' -v r="$round" '{t[NR] = $1} END {
		printf "round %d: sequential %.3f s, cap 4 %.3f s (%.2fx), cap 10 %.3f s (%.2fx)\n",
			r, t[1], t[2], t[1] / t[2], t[3], t[1] / t[3] }'
SELECT bf_start(w, jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 100) g))) AS r1
  FROM (VALUES ('speedup_1')) v(w) \gset
SELECT bf_wait(:r1) IS NULL \g /dev/null
SELECT bf_start(w, jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 100) g))) AS r4
  FROM (VALUES ('speedup_4')) v(w) \gset
SELECT bf_wait(:r4) IS NULL \g /dev/null
SELECT bf_start(w, jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 100) g))) AS r10
  FROM (VALUES ('speedup_10')) v(w) \gset
SELECT bf_wait(:r10) IS NULL \g /dev/null
SELECT extract(epoch FROM finished_at - started_at) FROM batchflow.runs
 WHERE id IN (:r1, :r4, :r10) ORDER BY id;
SQL
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; other work slows every figure)"
