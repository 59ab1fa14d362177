#!/bin/bash
# scripts/demo.sh - build, install and show batchflow on a throwaway cluster.
#
# Installs the dependencies (as root), builds and installs the extension,
# starts a private cluster, registers a workflow whose loop runs 100 items
# of ~100 ms of SQL work at concurrency 5 while printing live progress, runs
# the same items sequentially, prints the speedup, and stops the cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ "$(id -u)" = 0 ]; then
	bash scripts/deps.sh
fi
echo "== build and install"
make -s
if [ "$(id -u)" = 0 ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/batchflow-demo.XXXXXX")
chmod 755 "$WORK"
PORT=${BF_DEMO_PORT:-54339}
trap 'bash "$ROOT/scripts/cluster.sh" stop "$WORK/cluster"' EXIT
echo "== throwaway cluster in $WORK/cluster"
bash scripts/cluster.sh start "$WORK/cluster" "$PORT" postgres

psql_q() {
	local u=()
	[ "$(id -u)" = 0 ] && u=(runuser -u postgres --)
	"${u[@]}" "$(pg_config --bindir)/psql" -h "$WORK/cluster" -p "$PORT" -U postgres -d postgres \
		-X -q -v ON_ERROR_STOP=1 "$@"
}

echo "== register the demo workflow"
psql_q <<'SQL'
CREATE TABLE demo_result (idx int PRIMARY KEY, item jsonb, done_at timestamptz DEFAULT clock_timestamp());
-- Each item: ~100 ms of work, then one row recording it.
SELECT bf_register('demo_parallel', $${
  "description": "100 items, 100 ms each, 5 at a time",
  "nodes": [{"id": "work", "type": "loop", "loopType": "parallel", "concurrency": 5,
             "inputSource": {"variable": "items"},
             "children": [{"id": "sleep_and_insert", "type": "activity", "activity": "sql",
                           "sql": "INSERT INTO demo_result (idx, item) SELECT $2, $1 FROM pg_sleep(0.1) ON CONFLICT (idx) DO UPDATE SET item = EXCLUDED.item RETURNING idx"}]}]}$$) AS parallel_version;
SELECT bf_register('demo_sequential', $${
  "description": "the same items, one at a time",
  "nodes": [{"id": "work", "type": "loop", "loopType": "sequential",
             "inputSource": {"variable": "items"},
             "children": [{"id": "sleep_and_insert", "type": "activity", "activity": "sql",
                           "sql": "INSERT INTO demo_result (idx, item) SELECT $2, $1 FROM pg_sleep(0.1) ON CONFLICT (idx) DO UPDATE SET item = EXCLUDED.item RETURNING idx"}]}]}$$) AS sequential_version;
SQL

# Start a run, print its progress every half second until it ends, and
# print its elapsed seconds last.
run_with_progress() {
	local wf=$1 run status
	run=$(psql_q -At -c "SELECT bf_start('$wf', jsonb_build_object('items', (SELECT jsonb_agg(jsonb_build_object('n', g)) FROM generate_series(1, 100) g)))")
	echo "run $run of $wf started" >&2
	while :; do
		psql_q -At -F ' ' -c "SELECT format('  %-8s %3s/%s  %5s%%  %6s items/s  eta %-8s active %s', status, completed, total, percent, items_per_sec, coalesce(to_char(eta, 'MI:SS.MS'), '-'), active) FROM bf_progress($run)" >&2
		status=$(psql_q -At -c "SELECT status FROM batchflow.runs WHERE id = $run")
		case $status in pending|running) sleep 0.5 ;; *) break ;; esac
	done
	psql_q -At -c "SELECT round(extract(epoch FROM finished_at - started_at)::numeric, 2) FROM batchflow.runs WHERE id = $run"
	echo "run $run: $status" >&2
}

echo "== parallel: 100 items x 100 ms, concurrency 5"
t_par=$(run_with_progress demo_parallel)
echo "   took ${t_par} s (ideal 2.0 s)"
echo "== sequential: the same 100 items, one at a time"
t_seq=$(run_with_progress demo_sequential)
echo "   took ${t_seq} s (ideal 10.0 s)"

psql_q -At -c "SELECT format('== speedup %s / %s = %sx at concurrency 5 (ideal 5x); %s rows written', $t_seq, $t_par, round($t_seq / $t_par, 2), count(*)) FROM demo_result"
