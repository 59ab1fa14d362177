#!/bin/bash
# scripts/test.sh - the whole batchflow test suite, from a fresh Debian 12
# machine: install dependencies, build (warnings are errors), install, then
# run every kind of test against throwaway clusters:
#
#   pg_regress       test/sql/*.sql, expected output in test/expected/, in a
#                    shuffled order whose seed is printed (BF_TEST_SEED)
#   isolation        test/specs/*.spec
#   pgTAP            test/pgtap/*.sql, through pg_prove
#   Perl TAP         test/t/*.pl (PostgreSQL::Test::Cluster; their own clusters)
#   bench smoke      bench/smoke.sh, a few seconds of the benchmarks
#
# It ends with one line "N passed, N failed" and exits non-zero on any
# failure.  PostgreSQL refuses to run as root, so when run as root the tests
# run as the postgres user, in a copy of the tree that user owns.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)

if [ "$(id -u)" = 0 ]; then
	bash scripts/deps.sh || exit 1
fi
PGBIN=$(pg_config --bindir)
PGXS_DIR=$(dirname "$(pg_config --pgxs)")/..

echo "== build"
make -s clean >/dev/null 2>&1
if ! make -s 2>&1; then
	echo "build failed"
	echo "0 passed, 1 failed"
	exit 1
fi
if [ "$(id -u)" = 0 ]; then
	make -s install >/dev/null || { echo "install failed"; echo "0 passed, 1 failed"; exit 1; }
fi

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"; else env PATH="$PGBIN:$PATH" "$@"; fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/batchflow-test.XXXXXX")
chmod 755 "$WORK"
SRC=$WORK/src
mkdir -p "$SRC"
tar -C "$ROOT" --exclude=.git --exclude='*.o' --exclude='*.bc' --exclude='*.so' -cf - . | tar -C "$SRC" -xf -
[ "$(id -u)" = 0 ] && chown -R postgres: "$WORK"

CLUSTER=$WORK/cluster
PORT=${BF_TEST_PORT:-54329}
DB=contrib_regression

cleanup() {
	bash "$SRC/scripts/cluster.sh" stop "$CLUSTER" >/dev/null 2>&1
}
trap cleanup EXIT

echo "== cluster"
# More workers than the largest cap engine_overlap tests (10).
if ! BF_MAX_WORKERS=12 bash "$SRC/scripts/cluster.sh" start "$CLUSTER" "$PORT" "$DB"; then
	cat "$CLUSTER/server.log" 2>/dev/null | tail -30
	echo "0 passed, 1 failed"
	exit 1
fi

passed=0
failed=0
failures=()

# run_regress LABEL PROGRAM DIR TEST...: run pg_regress or
# pg_isolation_regress on the cluster, show its output and its diffs, and
# count its tests: the "test NAME ... ok" lines pass, every other requested
# test fails (pg_regress stops early on some errors).
run_regress() {
	local label=$1 program=$2 dir=$3 p
	shift 3
	echo "== $label"
	[ $# -gt 0 ] || return 0
	as_pg "$program" --bindir="$PGBIN" \
		--inputdir=test --outputdir="$WORK/$dir" --use-existing --dbname=$DB \
		--host="$CLUSTER" --port="$PORT" --user=postgres "$@" >"$WORK/$label.log" 2>&1
	cat "$WORK/$label.log"
	[ -s "$WORK/$dir/regression.diffs" ] && cat "$WORK/$dir/regression.diffs"
	p=$(grep -cE '^(test| ) *[^ ]+ +\.\.\. ok' "$WORK/$label.log")
	passed=$((passed + p))
	failed=$((failed + $# - p))
	if [ "$p" -lt $# ]; then failures+=("$label"); fi
}

cd "$SRC"
# The regression tests run in a shuffled order, so that a test that only
# passes after another one shows up; BF_TEST_SEED=N repeats an order.
SEED=${BF_TEST_SEED:-$(( $(od -An -N2 -tu2 /dev/urandom) ))}
echo "pg_regress order: shuffled, seed $SEED (BF_TEST_SEED=$SEED repeats it)"
run_regress pg_regress "$PGXS_DIR/test/regress/pg_regress" out \
	$(ls test/sql/*.sql 2>/dev/null | sed 's|test/sql/||; s|\.sql$||' | sort |
		perl -MList::Util=shuffle -e 'srand($ARGV[0]); print shuffle(<STDIN>)' "$SEED")
run_regress isolation "$PGXS_DIR/test/isolation/pg_isolation_regress" out-isolation \
	$(ls test/specs/*.spec 2>/dev/null | sed 's|test/specs/||; s|\.spec$||' | sort)

echo "== pgTAP"
for f in test/pgtap/*.sql; do
	[ -e "$f" ] || continue
	if as_pg pg_prove -h "$CLUSTER" -p "$PORT" -U postgres -d $DB "$f"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$f")
	fi
done

echo "== Perl TAP"
for f in test/t/*.pl; do
	[ -e "$f" ] || continue
	if as_pg env TESTDIR="$SRC" PG_REGRESS="$PGXS_DIR/test/regress/pg_regress" \
		PERL5LIB="$PGXS_DIR/test/perl:$SRC/test/t" \
		prove -I "$PGXS_DIR/test/perl" -I "$SRC/test/t" "$f"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$f")
		for log in "$SRC"/tmp_check/log/*"$(basename "$f" .pl)"*; do
			[ -f "$log" ] && { echo "--- $log"; tail -40 "$log"; }
		done
	fi
done

echo "== bench smoke"
if [ -f bench/smoke.sh ]; then
	if as_pg bash bench/smoke.sh; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("bench/smoke.sh")
	fi
fi

echo
echo "pg_regress, isolation, pgTAP, TAP and smoke results above; failing: ${failures[*]:-none}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
