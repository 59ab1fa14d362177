#!/bin/bash
# scripts/cluster.sh - throwaway PostgreSQL 15 clusters for the demo, the
# tests and the benchmarks.  PostgreSQL refuses to run as root, so the
# cluster belongs to the postgres user when we are root.
#
#   scripts/cluster.sh start DIR PORT [DBNAME]   initdb (if needed) + start
#   scripts/cluster.sh stop DIR                  stop by the postmaster's pid
#
# The cluster listens only on a unix socket in DIR (no TCP), preloads
# batchflow and pg_cron, and its workers serve DBNAME (default postgres),
# which is created if missing, with the extension installed.  The pool has
# BF_MAX_WORKERS workers (default 10) when the cluster is created.
set -euo pipefail

PGBIN=$(pg_config --bindir)
cmd=${1:?usage: cluster.sh start DIR PORT [DBNAME] | stop DIR}
dir=${2:?missing DIR}

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
	port=${3:?missing PORT}
	db=${4:-postgres}
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log"
		cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_preload_libraries = 'batchflow,pg_cron'
max_worker_processes = 32
batchflow.max_workers = ${BF_MAX_WORKERS:-10}
batchflow.database_name = '$db'
cron.database_name = '$db'
fsync = on
log_min_messages = warning
CONF
	fi
	as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
	if [ "$db" != postgres ]; then
		as_pg "$PGBIN/psql" -h "$dir" -p "$port" -U postgres -d postgres -qAtX \
			-c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
			as_pg "$PGBIN/createdb" -h "$dir" -p "$port" -U postgres "$db"
	fi
	as_pg "$PGBIN/psql" -h "$dir" -p "$port" -U postgres -d "$db" -qAtX \
		-c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS batchflow"
	# The cluster is ready when batchflow's workers serve $db.  A launcher
	# that started before $db existed exited, and the postmaster starts it
	# again only after its 5 s restart interval: a test started before
	# that found no worker (a paced test then measured the catch-up).
	for _ in $(seq 1 300); do
		as_pg "$PGBIN/psql" -h "$dir" -p "$port" -U postgres -d "$db" -qAtX -c \
			"SELECT 1 FROM pg_stat_activity WHERE backend_type = 'batchflow worker' AND datname = current_database() HAVING count(*) > 0" |
			grep -q 1 && break
		sleep 0.1
	done
	;;
stop)
	if [ -f "$dir/data/postmaster.pid" ]; then
		pid=$(head -1 "$dir/data/postmaster.pid")
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 1 600); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	;;
*)
	echo "usage: cluster.sh start DIR PORT [DBNAME] | stop DIR" >&2
	exit 2
	;;
esac
