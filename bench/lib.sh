#!/bin/bash
# bench/lib.sh - helpers shared by bench/smoke.sh and bench/run.sh.
#
# Source it, then:
#   bench_cluster_start [max_workers]   throwaway cluster in a mktemp dir on a
#                                       free port, workers serving "postgres";
#                                       sets BENCH_WORK, BENCH_DIR, BENCH_PORT.
#                                       With max_workers it also sizes the
#                                       pool, turns track_commit_timestamp on
#                                       and restarts; without, it keeps
#                                       scripts/cluster.sh's defaults
#   bench_cluster_stop                  stop it and remove the directory
#   bq [psql args]                      psql -XAtq with ON_ERROR_STOP to it
#   bench_register NAME LOOPTYPE CAP SQL [extra loop json]
#   bench_start NAME N [item-sql]       start a run over N items; prints run id
#   bench_wait RUN [timeout]            bf_wait; fails unless 'succeeded'
#   bench_elapsed RUN                   seconds from the run's start to its end
#
# It works as root (the cluster then belongs to the postgres user, through
# scripts/cluster.sh) and as the postgres user.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=$(pg_config --bindir)
export PATH="$PGBIN:$PATH"

# A TCP port nobody listens on and no socket of ours uses (the cluster
# itself listens only on a unix socket in its own directory).
bench_free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$((41000 + RANDOM % 9000))
		if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	echo 45432
}

bench_cluster_start() {
	local workers=${1:-}
	BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/batchflow-bench.XXXXXX")
	chmod 755 "$BENCH_WORK"
	BENCH_DIR=$BENCH_WORK/c
	BENCH_PORT=${BENCH_PORT:-$(bench_free_port)}
	# First start: initdb and CREATE EXTENSION; then size the pool (a
	# postmaster setting) and restart so the workers are there.
	bash "$BENCH_ROOT/scripts/cluster.sh" start "$BENCH_DIR" "$BENCH_PORT" postgres || return 1
	if [ -z "$workers" ]; then
		BENCH_WORKERS=$(bq -c "SHOW batchflow.max_workers")
		bench_wait_workers "$BENCH_WORKERS"
		return
	fi
	BENCH_WORKERS=$workers
	cat >>"$BENCH_DIR/data/postgresql.conf" <<CONF
batchflow.max_workers = $workers
max_worker_processes = $((workers + 8))
max_connections = 200
shared_buffers = 256MB
track_commit_timestamp = on
CONF
	bash "$BENCH_ROOT/scripts/cluster.sh" stop "$BENCH_DIR"
	bash "$BENCH_ROOT/scripts/cluster.sh" start "$BENCH_DIR" "$BENCH_PORT" postgres || return 1
	bench_wait_workers "$workers"
}

bench_cluster_stop() {
	[ -n "${BENCH_DIR:-}" ] || return 0
	bash "$BENCH_ROOT/scripts/cluster.sh" stop "$BENCH_DIR" >/dev/null 2>&1
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$BENCH_WORK"
	BENCH_DIR=
}

bq() {
	psql -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 "$@"
}

# Wait (up to 60 s) until n batchflow workers are connected.
bench_wait_workers() {
	local n=$1 have
	for _ in $(seq 1 600); do
		have=$(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker'")
		[ "$have" -ge "$n" ] && return 0
		sleep 0.1
	done
	echo "only $have of $n batchflow workers came up" >&2
	return 1
}

# bench_register NAME parallel|sequential CAP SQL [extra loop properties]
bench_register() {
	local name=$1 type=$2 cap=$3 sql=$4 extra=${5:-}
	bq -v name="$name" -v type="$type" -v cap="$cap" -v sql="$sql" -v extra="$extra" <<'SQL' >/dev/null
SELECT bf_register(:'name', jsonb_build_object('nodes', jsonb_build_array(
         jsonb_build_object('id', 'work', 'type', 'loop', 'loopType', :'type',
                            'concurrency', (:'cap')::int,
                            'inputSource', jsonb_build_object('variable', 'items'),
                            'children', jsonb_build_array(jsonb_build_object(
                               'id', 'act', 'type', 'activity', 'activity', 'sql', 'sql', :'sql')))
         || coalesce(nullif(:'extra', '')::jsonb, '{}'))));
SQL
}

# bench_start NAME N: start a run over the items 0..N-1; prints the run id.
bench_start() {
	bq -c "SELECT bf_start('$1', jsonb_build_object('items', coalesce((SELECT jsonb_agg(g) FROM generate_series(0, $2 - 1) g), '[]')))"
}

# bench_wait RUN [timeout]: fails (with a message) unless the run succeeded.
bench_wait() {
	local st
	st=$(bq -c "SELECT bf_wait($1, '${2:-10 minutes}')") || return 1
	if [ "$st" != succeeded ]; then
		echo "run $1 ended '$st': $(bq -c "SELECT error FROM batchflow.runs WHERE id = $1")" >&2
		return 1
	fi
}

# Seconds from the run's start (its bf_start transaction) to its end.
bench_elapsed() {
	bq -c "SELECT round(extract(epoch FROM finished_at - started_at)::numeric, 3) FROM batchflow.run WHERE id = $1"
}

# Item counts of a run, as "succeeded failed other".
bench_counts() {
	bq -F ' ' -c "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed')) FROM batchflow.item WHERE run_id = $1"
}

# Largest number of the run's items whose [started_at, finished_at] overlap.
bench_max_overlap() {
	bq -c "SELECT coalesce(max(n), 0) FROM (
	         SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n
	           FROM (SELECT started_at AS t, 1 AS d FROM batchflow.item WHERE run_id = $1
	                 UNION ALL
	                 SELECT finished_at, -1 FROM batchflow.item WHERE run_id = $1) e) s"
}
