#!/bin/bash
# bench/deps.sh - dependsOn: how close a dependency graph runs to the ideal
# schedule, and how fast a big graph claims compared with a plain loop.
#
#   bash bench/deps.sh [ROUNDS] [N]     (default 3 rounds, N = 100000)
#
# On a throwaway cluster with the default pool of 10 workers:
#
# 1. The 20-package graph of examples/package_build.sql (a diamond, two
#    chains, joins, independent leaves), every build 100 ms (pg_sleep), at
#    cap 4.  The benchmark computes the ideal greedy list schedule itself:
#    at every instant as many ready items as the cap allows run, the ready
#    ones taken in index order, each for exactly 100 ms, no overhead.  It
#    prints that makespan beside the measured one (the loop's finished_at -
#    started_at); the goal is within 10 %.
# 2. N no-op items (SELECT 1) at cap 10: a plain loop, and a dependsOn loop
#    whose item i depends on item (i - 1) / 2 (a binary tree: every item
#    but the root waits for one other, 17 levels).  Printed: the time
#    bf_start takes (the graph check and its edges are recorded there),
#    and the claim rate, items per second from the loop's start to its end;
#    the goal is the graph within 20 % of the plain loop.
#
# Not run by CI (a few minutes).  Figures go into docs/performance.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-3}
N=${2:-100000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/batchflow-deps.XXXXXX")
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'bash "$ROOT/scripts/cluster.sh" stop "$WORK/c" >/dev/null 2>&1; rm -rf "$WORK"' EXIT

bash "$ROOT/scripts/cluster.sh" start "$WORK/c" "$PORT" >/dev/null
psql_() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- psql -h "$WORK/c" -p "$PORT" -U postgres -X -qAt -v ON_ERROR_STOP=1 "$@"
	else psql -h "$WORK/c" -p "$PORT" -U postgres -X -qAt -v ON_ERROR_STOP=1 "$@"; fi
}

# The 20 packages of examples/package_build.sql, in the example's order (by name).
PACKAGES='[
 {"name": "admin", "deps": ["web"]}, {"name": "auth", "deps": ["db", "config"]},
 {"name": "cache", "deps": ["db"]}, {"name": "cli", "deps": []},
 {"name": "config", "deps": ["util", "log"]}, {"name": "core", "deps": []},
 {"name": "db", "deps": ["core"]}, {"name": "http", "deps": ["net"]},
 {"name": "json", "deps": []}, {"name": "log", "deps": ["core"]},
 {"name": "mail", "deps": []}, {"name": "metrics", "deps": []},
 {"name": "net", "deps": ["config"]}, {"name": "queue", "deps": ["cache"]},
 {"name": "sdk", "deps": ["http", "json"]}, {"name": "search", "deps": []},
 {"name": "storage", "deps": []}, {"name": "util", "deps": ["core"]},
 {"name": "web", "deps": ["http"]}, {"name": "worker", "deps": ["queue", "auth"]}]'

# The ideal greedy list schedule under the cap, simulated event by event.
IDEAL=$(python3 - "$PACKAGES" <<'PY'
import json, sys
items = json.loads(sys.argv[1]); cap = 4; dur = 0.1
idx = {it["name"]: i for i, it in enumerate(items)}
unmet = [len(it["deps"]) for it in items]
dependents = [[] for _ in items]
for i, it in enumerate(items):
    for d in it["deps"]:
        dependents[idx[d]].append(i)
t = 0.0; running = []; done = 0; started = set()
while done < len(items):
    ready = [i for i in range(len(items)) if unmet[i] == 0 and i not in started]
    while len(running) < cap and ready:
        i = ready.pop(0); started.add(i); running.append((t + dur, i))
    running.sort(); end, i = running.pop(0); t = end; done += 1
    for j in dependents[i]:
        unmet[j] -= 1
    # items ending at the same instant free their slots together
    while running and abs(running[0][0] - t) < 1e-9:
        end, i = running.pop(0); done += 1
        for j in dependents[i]:
            unmet[j] -= 1
print("%.3f" % t)
PY
)

psql_ <<SQL >/dev/null
SELECT bf_register('deps_graph20', '{"nodes": [{"id": "build", "type": "loop", "loopType": "parallel", "concurrency": 4,
  "inputSource": {"variable": "items"}, "dependsOn": {"key": "name", "after": "deps"},
  "children": [{"id": "b", "type": "activity", "activity": "sql", "sql": "SELECT pg_sleep(0.1)"}]}]}');
SELECT bf_register('deps_plain', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 10,
  "inputSource": {"variable": "items"},
  "children": [{"id": "noop", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('deps_tree', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 10,
  "inputSource": {"variable": "items"}, "dependsOn": {"key": "k", "after": "deps"},
  "children": [{"id": "noop", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
CREATE TABLE bench_input AS
SELECT jsonb_build_object('items', jsonb_agg(g ORDER BY g)) AS plain,
       jsonb_build_object('items', jsonb_agg(jsonb_build_object('k', g,
           'deps', CASE WHEN g = 0 THEN '[]'::jsonb ELSE jsonb_build_array((g - 1) / 2) END) ORDER BY g)) AS tree
  FROM generate_series(0, $N - 1) g;
SQL
sleep 1

echo "20-package graph, 100 ms builds, cap 4: ideal greedy list schedule ${IDEAL} s"
for round in $(seq 1 "$ROUNDS"); do
	psql_ -v pk="$PACKAGES" <<'SQL' | awk -F'|' -v r="$round" -v ideal="$IDEAL" '{
		printf "  round %d: measured %.3f s, ideal %.3f s, %+.1f %%\n", r, $1, ideal, 100 * ($1 - ideal) / ideal }'
SELECT bf_start('deps_graph20', jsonb_build_object('items', :'pk'::jsonb)) AS run \gset
SELECT bf_wait(:run) \g /dev/null
SELECT extract(epoch FROM finished_at - started_at) FROM batchflow.loop WHERE run_id = :run;
SQL
done

echo "$N no-op items at cap 10: plain loop vs dependsOn binary tree"
for round in $(seq 1 "$ROUNDS"); do
	for wf in deps_plain deps_tree; do
		col=plain; [ "$wf" = deps_tree ] && col=tree
		psql_ <<SQL
\\timing on
SELECT bf_start('$wf', (SELECT $col FROM bench_input)) AS run \\gset
\\timing off
SELECT bf_wait(:run, '30 minutes') \\g /dev/null
SELECT format('  round %s %-10s items/s %s (loop %s s)', $round, '$wf',
              round(total / extract(epoch FROM finished_at - started_at)),
              round(extract(epoch FROM finished_at - started_at)::numeric, 2))
  FROM batchflow.loop WHERE run_id = :run;
SQL
	done
done 2>&1 | sed -E 's/^Time: ([0-9.]+) ms.*/  bf_start \1 ms/'
