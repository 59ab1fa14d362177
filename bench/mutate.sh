#!/bin/bash
# bench/mutate.sh - mutation testing: does the suite catch small realistic
# bugs?  Not part of CI (a few minutes per mutation).
#
#   bench/mutate.sh WORKDIR PORT [NAME...]
#
# For each mutation bench/mutations/NAME.patch (default: all of them), in
# name order: export HEAD (git archive, never the working tree), apply the
# patch, build it, install it into a private copy of the PostgreSQL 15
# installation under WORKDIR (the server finds its library and share
# directories relative to its own binary), and run the tests the patch
# names in its header:
#
#   # tests: regress:engine_basic isolation:claim_cap2_three tap:014_recovery
#
# regress: and isolation: tests run on a throwaway cluster of that install
# on PORT; tap: tests (test/t/NAME.pl) make their own.  A test that fails
# has caught the mutation.  Prints one line per test and one per mutation,
# "caught" (at least one test failed in every run) or "survived", then a
# table.  RUNS=N repeats the tests of each mutation N times (default 1) and
# counts the runs that caught it.  BASELINE=1 first runs every named test on
# unmodified HEAD, where each must pass (else a "caught" means nothing).
#
# A mutation whose patch no longer applies to HEAD is reported "stale":
# regenerate it (see docs/testing.md).
set -uo pipefail
work=${1:?usage: bench/mutate.sh WORKDIR PORT [NAME...]}
port=${2:?missing PORT}
shift 2
runs=${RUNS:-1}
repo=$(cd "$(dirname "$0")/.." && pwd)
sys_pg_config=/usr/bin/pg_config
pgbin=$($sys_pg_config --bindir)
pglib=$(dirname "$pgbin")
pgshare=$($sys_pg_config --sharedir)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PATH="$PATH" "$@"; else "$@"; fi; }

mkdir -p "$work/out" "$work/log"
work=$(cd "$work" && pwd)
[ "$(id -u)" = 0 ] && chmod 755 "$work" && chown postgres: "$work/out"
if [ $# -gt 0 ]; then
	names=("$@")
else
	names=()
	for p in "$repo"/bench/mutations/*.patch; do names+=("$(basename "$p" .patch)"); done
fi

# The private copy of the installation (once), with the headers linked.
if [ ! -x "$work/pg$pgbin/postgres" ]; then
	mkdir -p "$work/pg$(dirname "$pglib")" "$work/pg$(dirname "$pgshare")" "$work/pg/usr"
	cp -a "$pglib" "$work/pg$(dirname "$pglib")/"
	cp -a "$pgshare" "$work/pg$(dirname "$pgshare")/"
	ln -sfn /usr/include "$work/pg/usr/include"
fi
export PATH="$work/pg$pgbin:$PATH"
export PG_TEST_PORT_DIR=${PG_TEST_PORT_DIR:-/tmp/bf-portlock}
mkdir -p "$PG_TEST_PORT_DIR"
chmod 777 "$PG_TEST_PORT_DIR" 2>/dev/null || true
pgxs_dir=$(dirname "$(pg_config --pgxs)")/..

# Export HEAD into $work/src, apply patch $1 (if any), build and install.
build()
{
	local patch=${1:-}
	rm -rf "$work/src"
	mkdir -p "$work/src"
	git -C "$repo" archive HEAD | tar -x -C "$work/src"
	if [ -n "$patch" ] && ! git -C "$work/src" apply "$patch" 2>"$work/apply.log"; then
		return 2
	fi
	make -s -C "$work/src" PG_CONFIG=$sys_pg_config with_llvm=no >"$work/build.log" 2>&1 || return 3
	make -s -C "$work/src" PG_CONFIG=$sys_pg_config with_llvm=no install DESTDIR="$work/pg" >>"$work/build.log" 2>&1 || return 3
	[ "$(id -u)" = 0 ] && chown -R postgres: "$work/src" "$work/pg"
	return 0
}

# Stop the throwaway cluster: fast, then immediate if a mutant hangs it.
stop_cluster()
{
	local pid
	[ -f "$1/data/postmaster.pid" ] || return 0
	pid=$(head -1 "$1/data/postmaster.pid")
	timeout 30 bash "$work/src/scripts/cluster.sh" stop "$1" >/dev/null 2>&1
	kill -0 "$pid" 2>/dev/null && kill -QUIT "$pid" 2>/dev/null
	sleep 1
	return 0
}

# Run one test (kind:name) against the installed build; 0 = passed.
run_test()
{
	local kind=${1%%:*} name=${1#*:} rc
	local cluster="$work/cluster" log="$work/log/$label.$kind.$name.$2"
	case "$kind" in
	regress | isolation)
		stop_cluster "$cluster"
		rm -rf "$cluster"
		BF_MAX_WORKERS=12 bash "$work/src/scripts/cluster.sh" start "$cluster" "$port" contrib_regression >"$log" 2>&1 || return 1
		local prog=regress/pg_regress
		[ "$kind" = isolation ] && prog=isolation/pg_isolation_regress
		rm -rf "$work/out"/* 2>/dev/null
		(cd "$work/src" && as_pg "$pgxs_dir/test/$prog" --bindir="$pgbin" \
			--inputdir=test --outputdir="$work/out" --use-existing --dbname=contrib_regression \
			--host="$cluster" --port="$port" --user=postgres "$name") >>"$log" 2>&1
		rc=$?
		cat "$work/out/regression.diffs" >>"$log" 2>/dev/null
		stop_cluster "$cluster"
		return $rc
		;;
	tap)
		rm -rf "$work/src/tmp_check"
		(cd "$work/src" && as_pg timeout 900 env TESTDIR="$work/src" PG_REGRESS="$pgxs_dir/test/regress/pg_regress" \
			PG_TEST_PORT_DIR="$PG_TEST_PORT_DIR" \
			prove -I "$pgxs_dir/test/perl" -I test/t "test/t/$name.pl") >"$log" 2>&1
		return $?
		;;
	*)
		echo "unknown test kind in $1" >"$log"
		return 1
		;;
	esac
}

tests_of() { sed -n 's/^# tests: //p' "$repo/bench/mutations/$1.patch" | head -1; }
what_of() { sed -n 's/^# mutation: //p' "$repo/bench/mutations/$1.patch" | head -1; }

if [ "${BASELINE:-0}" = 1 ]; then
	label=baseline
	echo "== baseline (HEAD, no mutation)"
	build "" || { echo "baseline build failed: $work/build.log"; exit 1; }
	declare -A seen=()
	for n in "${names[@]}"; do
		for t in $(tests_of "$n"); do
			[ -n "${seen[$t]:-}" ] && continue
			seen[$t]=1
			if run_test "$t" 1; then echo "  $t: passes"; else echo "  $t: FAILS on HEAD ($work/log/baseline.${t%%:*}.${t#*:}.1)"; fi
		done
	done
fi

summary=()
for n in "${names[@]}"; do
	label=$n
	patch="$repo/bench/mutations/$n.patch"
	echo "== $n: $(what_of "$n")"
	build "$patch"
	case $? in
	2) echo "  stale: the patch does not apply to HEAD ($work/apply.log)"; summary+=("$n|stale|-|-"); continue ;;
	3) echo "  does not build ($work/build.log)"; summary+=("$n|no build|-|-"); continue ;;
	esac
	caught_runs=0
	declare -A hits=()
	for r in $(seq 1 "$runs"); do
		caught=0
		for t in $(tests_of "$n"); do
			if run_test "$t" "$r"; then
				echo "  run $r $t: passed"
			else
				echo "  run $r $t: FAILED (caught)"
				caught=1
				hits[$t]=$(( ${hits[$t]:-0} + 1 ))
			fi
		done
		caught_runs=$((caught_runs + caught))
	done
	best=""
	for t in "${!hits[@]}"; do [ "${hits[$t]}" = "$runs" ] && best="$best $t"; done
	if [ "$caught_runs" = "$runs" ]; then verdict=caught; else verdict=survived; fi
	echo "  $n: $verdict in $caught_runs of $runs runs; caught in every run by:${best:- none}"
	summary+=("$n|$verdict|$caught_runs/$runs|${best# }")
	unset hits
done

echo
printf '%-32s %-9s %-6s %s\n' mutation result runs "caught every run by"
for line in "${summary[@]}"; do
	IFS='|' read -r n v c b <<<"$line"
	printf '%-32s %-9s %-6s %s\n' "$n" "$v" "$c" "$b"
done
