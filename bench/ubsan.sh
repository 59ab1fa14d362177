#!/bin/bash
# bench/ubsan.sh - run the regression tests and the definition fuzzer
# against batchflow built with -fsanitize=undefined (issue 8).
#
#   bench/ubsan.sh WORKDIR PORT [CASES] [SEED]
#
# Builds HEAD (git archive, never the shared working tree) with
# -fsanitize=undefined -fno-sanitize-recover=all, installs it into a private
# copy of the PostgreSQL 15 installation under WORKDIR (the server finds its
# library directory relative to its own binary), starts a throwaway cluster
# there on a unix socket, runs every test/sql test and CASES fuzzer cases
# (default 100000), and reports any UBSan finding: with recovery off, any
# undefined behaviour aborts the backend, which the tests and the server
# log show.  AddressSanitizer is not used: preloading libasan into the
# uninstrumented postgres binary deadlocks in bindtextdomain at start-up.
set -euo pipefail
work=${1:?usage: bench/ubsan.sh WORKDIR PORT [CASES] [SEED]}
port=${2:?missing PORT}
cases=${3:-100000}
seed=${4:-0.8}
repo=$(cd "$(dirname "$0")/.." && pwd)
pgbin=$(pg_config --bindir)
pglib=$(dirname "$pgbin")
pgshare=$(pg_config --sharedir)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

mkdir -p "$work"
work=$(cd "$work" && pwd)
rm -rf "$work/pg" "$work/src" "$work/data" "$work/out" "$work"/ubsan.*
mkdir -p "$work/pg$(dirname "$pglib")" "$work/pg$(dirname "$pgshare")" "$work/src" "$work/sock" "$work/out"
cp -a "$pglib" "$work/pg$(dirname "$pglib")/"
cp -a "$pgshare" "$work/pg$(dirname "$pgshare")/"
git -C "$repo" archive HEAD | tar -x -C "$work/src"
make -s -C "$work/src" with_llvm=no \
	COPT='-fsanitize=undefined -fno-sanitize-recover=all -fno-omit-frame-pointer'
make -s -C "$work/src" with_llvm=no install DESTDIR="$work/pg"
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"

bin="$work/pg$pgbin"
as_pg "$bin/initdb" -D "$work/data" -A trust -U postgres --no-sync >"$work/initdb.log"
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work/sock'
port = $port
shared_preload_libraries = 'batchflow'
max_worker_processes = 32
batchflow.max_workers = 12
batchflow.database_name = 'contrib_regression'
CONF
start() {
	as_pg env UBSAN_OPTIONS="print_stacktrace=1:log_path=$work/ubsan" \
		"$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w "$@" >/dev/null 2>&1
}
start start
"$bin/psql" -h "$work/sock" -p "$port" -U postgres -d postgres -qc 'CREATE DATABASE contrib_regression'
start restart	# the launcher serves contrib_regression from now on
"$bin/psql" -h "$work/sock" -p "$port" -U postgres -d contrib_regression -qc 'CREATE EXTENSION batchflow'

cd "$repo"
"$pglib/lib/pgxs/src/test/regress/pg_regress" --bindir="$pgbin" --inputdir=test \
	--outputdir="$work/out" --use-existing --dbname=contrib_regression \
	--host="$work/sock" --port="$port" --user=postgres \
	$(ls test/sql | sed 's/\.sql$//') | grep -E '^test|tests' || true
bash bench/fuzz.sh "$work/sock" "$port" contrib_regression "$cases" "$seed" | tail -9

start stop -m fast
echo "UBSan reports: $(cat "$work"/ubsan.* 2>/dev/null | grep -c 'runtime error' || true)"
echo "backends killed by a signal: $(grep -c 'terminated by signal' "$work/server.log" || true)"
