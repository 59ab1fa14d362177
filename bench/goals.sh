#!/bin/bash
# bench/goals.sh - the figures of the performance round 2 (issue 18), each
# measured in the same run as its baseline, with pass/short:
#
#   1. start latency: bf_start commit -> first item start, p50 over N
#      one-item runs, against graphile-worker's add_job -> task start;
#   2. start throughput: pgbench -c 16 calling bf_start of 5-item runs
#      while the workers execute them, against pgbench -c 16 calling
#      graphile_worker.add_job while a graphile-worker runner executes;
#      with a perf profile of the bf_start backends (as root) and the
#      statements that take a bf_start's time (pg_stat_statements);
#   3. short batches: 20 and 40 items of 100 ms at cap 4, 100 at cap 10,
#      quiet and beside a second run of the same shape, each over the
#      sequential time of the same items in the same repetition; ramp-up
#      from the commit to the cap-th item's start;
#   4. HTTP at caps 200 and 1000 (bench/http.sh, its own cluster): items/s
#      over what the endpoint serves alone (not in the default set).
#
#   bash bench/goals.sh [--reps N] [--goals "1 2 3"] [--seconds S]
#                       [--tsv FILE] [--profile FILE] [--no-peer] [--keep]
#
# Defaults: 3 repetitions, goals 1 2 3, 10 s of pgbench per side.  Each
# figure is the median over the repetitions; ratios are taken within a
# repetition.  The machine's load average is printed at the start and
# the end: on a shared machine every figure is slowed by the others.
# The breaking point (goal 5) is bench/breaking.sh.  graphile-worker comes from npm as in bench/run.sh
# ($BENCH_GW_DIR, or a temporary directory).
set -euo pipefail
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"

REPS=3
GOALS="1 2 3"
SECS=10
TSV=
PROFILE=
PEER=1
while [ $# -gt 0 ]; do
	case $1 in
	--reps) REPS=$2; shift ;;
	--goals) GOALS=$2; shift ;;
	--seconds) SECS=$2; shift ;;
	--tsv) TSV=$2; shift ;;
	--profile) PROFILE=$2; shift ;;
	--no-peer) PEER=0 ;;
	--keep) BENCH_KEEP=1 ;;
	*) echo "usage: bench/goals.sh [--reps N] [--goals \"1 2 3\"] [--seconds S] [--tsv FILE] [--profile FILE] [--no-peer] [--keep]" >&2; exit 2 ;;
	esac
	shift
done
want() { [[ " $GOALS " == *" $1 "* ]]; }
WORKERS=20
N_LAT=50

GW_PID=
cleanup() {
	[ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null || true
	bench_cluster_stop
}
trap cleanup EXIT
T_BEGIN=$(date +%s)
log() { echo "[$(($(date +%s) - T_BEGIN))s] $*" >&2; }

bench_cluster_start "$WORKERS"
cat >>"$BENCH_DIR/data/postgresql.conf" <<CONF
shared_preload_libraries = 'batchflow,pg_cron,pg_stat_statements'
pg_stat_statements.track = none
max_connections = 200
CONF
bash scripts/cluster.sh stop "$BENCH_DIR"
bash scripts/cluster.sh start "$BENCH_DIR" "$BENCH_PORT" postgres
bench_wait_workers "$WORKERS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "cluster $BENCH_DIR, $WORKERS workers, $REPS repetition(s), goals $GOALS; load average $LOAD_START ($(nproc) cores)"

R=$BENCH_WORK/goals.tsv
: >"$R"
put() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$R"; }
med() {
	awk -F'\t' -v k="$1" '$1 == k { print $3 }' "$R" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
		       print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() {
	awk -F'\t' -v k="$1" '$1 == k { print $3 }' "$R" | sort -g |
		awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR > 1) printf " (%s-%s)", lo, hi }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

bq <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_stat_statements;
CREATE TABLE bench_mark (run_id bigint);
SQL
bench_register lat_c1 parallel 1 "SELECT 1"
bench_register five_c5 parallel 5 "SELECT 1"
bench_register s100_seq sequential 1 "SELECT pg_sleep(0.1)"
bench_register s100_c4 parallel 4 "SELECT pg_sleep(0.1)"
bench_register s100_c10 parallel 10 "SELECT pg_sleep(0.1)"

# graphile-worker, as in bench/run.sh
PEER_NOTE=
GW=${BENCH_GW_DIR:-$BENCH_WORK/gw}
if [ $PEER = 0 ]; then
	PEER_NOTE="skipped (--no-peer)"
elif [ ! -d "$GW/node_modules/graphile-worker" ]; then
	mkdir -p "$GW"
	if ! command -v npm >/dev/null; then
		PEER_NOTE="npm is not installed"
	elif ! (cd "$GW" && npm init -y >/dev/null && npm install --no-audit --no-fund graphile-worker >"$GW/npm.log" 2>&1); then
		PEER_NOTE="npm install graphile-worker failed"
	fi
fi
CONN="postgres://postgres@/postgres?host=$BENCH_DIR&port=$BENCH_PORT"
if [ -z "$PEER_NOTE" ]; then
	cp bench/graphile.mjs "$GW/"
	GW_VERSION=$(node -p "require('$GW/node_modules/graphile-worker/package.json').version")
fi
gw() { (cd "$GW" && node graphile.mjs "$CONN" "$@"); }
jget() { node -e "const r = JSON.parse(process.argv[1]); console.log(r['$1'])" "$2"; }

# CPU time (ms, user + system) of the whole server so far: the postmaster
# with its exited children (cutime, cstime) and its live children.  Less
# sensitive to the machine's load than wall-clock figures.
TICK_MS=$((1000 / $(getconf CLK_TCK)))
server_cpu_ms() {
	local pm f t p
	pm=$(head -1 "$BENCH_DIR/data/postmaster.pid")
	f=$(cat "/proc/$pm/stat"); f=${f##*) }
	set -- $f
	t=$((${12} + ${13} + ${14} + ${15}))
	for p in $(pgrep -P "$pm"); do
		f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		f=${f##*) }
		set -- $f
		t=$((t + ${12} + ${13}))
	done
	echo $((t * TICK_MS))
}

# Runs started through bench_mark: the marker row is written in bf_start's
# transaction and never updated, so its xmin's commit timestamp is the
# commit of bf_start.
mark_start() {	# mark_start WF N -> run id
	bq -c "WITH r AS (SELECT bf_start('$1', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, $2 - 1) g))) AS id)
	       INSERT INTO bench_mark SELECT id FROM r RETURNING run_id"
}
# ms from the commit of run $1 to the start of its $2-th item to start
ramp_ms() {
	bq -c "SELECT round((extract(epoch FROM i.started_at - pg_xact_commit_timestamp(m.xmin)) * 1000)::numeric, 2)
	         FROM bench_mark m, LATERAL (SELECT started_at FROM batchflow.item WHERE run_id = m.run_id
	                                     ORDER BY started_at OFFSET $2 - 1 LIMIT 1) i
	        WHERE m.run_id = $1"
}

# ms from the last item's end to its run's end (the loop's close) of run $1
close_ms() {
	bq -c "SELECT round((extract(epoch FROM r.finished_at - max(i.finished_at)) * 1000)::numeric, 2)
	         FROM batchflow.run r JOIN batchflow.item i ON i.run_id = r.id WHERE r.id = $1 GROUP BY r.finished_at"
}

# 1. Start latency -------------------------------------------------------------
if want 1; then
	for rep in $(seq 1 "$REPS"); do
		bq -c "TRUNCATE bench_mark"
		cpu0=$(server_cpu_ms)
		# One psql session; between runs the pool is idle (20 ms pause).
		for _ in $(seq 1 $N_LAT); do
			cat <<'SQL'
WITH r AS (SELECT bf_start('lat_c1', '{"items": [0]}') AS id) INSERT INTO bench_mark SELECT id FROM r RETURNING run_id AS run \gset
SELECT bf_wait(:run) \g /dev/null
SELECT pg_sleep(0.02) \g /dev/null
SQL
		done | bq >/dev/null
		read -r p50 p90 <<<"$(bq -F ' ' -c "WITH l AS (SELECT extract(epoch FROM i.started_at - pg_xact_commit_timestamp(m.xmin)) * 1000 AS ms
		                                     FROM bench_mark m JOIN batchflow.item i ON i.run_id = m.run_id)
		                        SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3),
		                               round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms)::numeric, 3) FROM l")"
		put lat_cpu_ms_per_run "$rep" "$(awk -v a="$cpu0" -v b="$(server_cpu_ms)" -v n=$N_LAT 'BEGIN { printf "%.2f", (b - a) / n }')"
		put lat_p50_ms "$rep" "$p50"
		put lat_p90_ms "$rep" "$p90"
		if [ -z "$PEER_NOTE" ]; then
			j=$(gw latency $N_LAT)
			g=$(printf %.3f "$(jget median_ms "$j")")
			put gw_lat_p50_ms "$rep" "$g"
			put lat_vs_gw "$rep" "$(ratio "$p50" "$g")"
		fi
		log "start latency rep $rep: batchflow p50 $p50 ms p90 $p90 ms; graphile-worker ${g:-n/a} ms"
	done
fi

# 2. Start throughput ----------------------------------------------------------
if want 2; then
	echo "SELECT bf_start('five_c5', '{\"items\": [1, 2, 3, 4, 5]}');" >"$BENCH_WORK/start.sql"
	echo "SELECT graphile_worker.add_job('noop', '{}'::json);" >"$BENCH_WORK/add_job.sql"
	pgb() {	# pgb SCRIPT -> tps
		pgbench -n -c 16 -j 2 -T "$SECS" -f "$1" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres postgres 2>"$BENCH_WORK/pgbench.err" |
			sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p'
	}
	for rep in $(seq 1 "$REPS"); do
		r0=$(bq -c "SELECT coalesce(max(id), 0) FROM batchflow.run")
		prof=0
		if [ "$rep" = 1 ]; then
			prof=1
			bq -c "ALTER SYSTEM SET pg_stat_statements.track = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
			sleep 0.3
			bq -c "SELECT pg_stat_statements_reset()" >/dev/null
		fi
		cpu0=$(server_cpu_ms)
		t0=$(date +%s.%N)
		pgb "$BENCH_WORK/start.sql" >"$BENCH_WORK/tps" &
		pgb_pid=$!
		perf_pid=
		if [ $prof = 1 ] && [ "$(id -u)" = 0 ] && command -v perf >/dev/null; then
			sleep 1
			pids=$(bq -c "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE application_name = 'pgbench'")
			if [ -n "$pids" ]; then
				perf record -q -F 499 -g -p "$pids" -o "$BENCH_WORK/perf.data" -- sleep 4 >/dev/null 2>&1 &
				perf_pid=$!
			fi
		fi
		wait "$pgb_pid"
		t1=$(date +%s.%N)
		[ -n "$perf_pid" ] && wait "$perf_pid" || true
		tps=$(cat "$BENCH_WORK/tps")
		[ -n "$tps" ] && tps=$(printf %.1f "$tps")
		[ -n "$tps" ] || { echo "pgbench of bf_start failed: $(tail -3 "$BENCH_WORK/pgbench.err")" >&2; exit 1; }
		# Items executed while pgbench ran, then the time to drain the rest.
		during=$(bq -c "SELECT count(*) FROM batchflow.item WHERE run_id > $r0 AND status = 'succeeded' AND finished_at <= to_timestamp($t1)")
		for _ in $(seq 1 600); do
			[ "$(bq -c "SELECT count(*) FROM batchflow.run WHERE id > $r0 AND finished_at IS NULL")" = 0 ] && break
			sleep 0.2
		done
		read -r nruns bad drain <<<"$(bq -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE status <> 'succeeded'),
		                                             round(extract(epoch FROM max(finished_at) - to_timestamp($t1))::numeric, 2)
		                                        FROM batchflow.run WHERE id > $r0")"
		[ "$bad" = 0 ] || { echo "start throughput: $bad of $nruns runs did not succeed" >&2; exit 1; }
		put start_cpu_ms_per_run "$rep" "$(awk -v a="$cpu0" -v b="$(server_cpu_ms)" -v n="$nruns" 'BEGIN { printf "%.2f", (b - a) / n }')"
		items_s=$(awk -v n="$during" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
		put starts_per_s "$rep" "$tps"
		put start_items_per_s "$rep" "$items_s"
		put start_drain_s "$rep" "$drain"
		# Runs completed per second from the first start to the drained end:
		# what the workers kept up with, not only what bf_start accepted.
		done_s=$(awk -v n="$nruns" -v a="$t0" -v b="$t1" -v d="$drain" 'BEGIN { t = b - a + (d > 0 ? d : 0); printf "%.1f", n / t }')
		put start_runs_done_per_s "$rep" "$done_s"
		if [ $prof = 1 ]; then
			bq -c "ALTER SYSTEM SET pg_stat_statements.track = 'none'" -c "SELECT pg_reload_conf()" >/dev/null
			STMTS=$(bq -c "SELECT format('| %s | %s | %s | %s |', calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3),
			                          replace(left(regexp_replace(query, '\s+', ' ', 'g'), 120), '|', '\|'))
			                 FROM pg_stat_statements
			                WHERE query NOT LIKE '%pg_stat_%' AND query NOT LIKE '%pg_reload_conf%'
			                ORDER BY total_exec_time DESC LIMIT 12")
		fi
		gtps=
		if [ -z "$PEER_NOTE" ]; then
			gw serve $((SECS + 4)) 10 >"$BENCH_WORK/gw.out" 2>"$BENCH_WORK/gw.err" &
			GW_PID=$!
			for _ in $(seq 1 300); do grep -q ready "$BENCH_WORK/gw.err" && break; sleep 0.1; done
			gtps=$(printf %.1f "$(pgb "$BENCH_WORK/add_job.sql")")
			wait "$GW_PID" || true
			GW_PID=
			put gw_add_job_per_s "$rep" "$gtps"
			put gw_serve_jobs_per_s "$rep" "$(jget jobs_per_sec "$(cat "$BENCH_WORK/gw.out")")"
			put starts_vs_gw "$rep" "$(ratio "$tps" "$gtps")"
			bq -c "DELETE FROM graphile_worker._private_jobs" >/dev/null 2>&1 || true
		fi
		log "start throughput rep $rep: $tps bf_start/s ($nruns runs, $items_s items/s executed meanwhile, drained $drain s after, $done_s runs completed/s from start to drained); graphile-worker add_job ${gtps:-n/a}/s"
	done
	PERF=
	if [ -s "$BENCH_WORK/perf.data" ]; then
		PERF_SELF=$(perf report -i "$BENCH_WORK/perf.data" --stdio --no-children --sort symbol 2>/dev/null |
			grep -E '^ +[0-9.]+%' | head -25 | sed 's/^ *//; s/ *$//' || true)
		PERF_CHILDREN=$(perf report -i "$BENCH_WORK/perf.data" --stdio --children --sort symbol -g none 2>/dev/null |
			grep -E '^ +[0-9.]+%' | head -45 | sed 's/^ *//; s/ *$//' || true)
		PERF=1
	fi
	if [ -n "$PROFILE" ]; then
		{
			echo "## Where a bf_start spends its time (pgbench -c 16, 5-item runs)"
			echo
			echo "Statements (pg_stat_statements, track = all, repetition 1):"
			echo
			echo "| calls | total ms | mean ms | statement |"
			echo "|---|---|---|---|"
			echo "${STMTS:-}"
			if [ -n "$PERF" ]; then
				echo
				echo "perf record -F 499 -g on the pgbench backends for 4 s, self time:"
				echo
				echo '```'
				echo "$PERF_SELF"
				echo '```'
				echo
				echo "Inclusive (children) time:"
				echo
				echo '```'
				echo "$PERF_CHILDREN"
				echo '```'
			fi
		} >"$PROFILE"
	fi
fi

# 3. Short batches ---------------------------------------------------------------
if want 3; then
	elapsed() { bq -c "SELECT extract(epoch FROM finished_at - started_at) FROM batchflow.run WHERE id = $1"; }
	for rep in $(seq 1 "$REPS"); do
		for n in 20 40 100; do
			cap=$([ $n = 100 ] && echo 10 || echo 4)
			run=$(mark_start s100_seq $n); bench_wait "$run"; tseq=$(elapsed "$run")
			run=$(mark_start "s100_c$cap" $n); bench_wait "$run"; tpar=$(elapsed "$run")
			put "short${n}_c${cap}_speedup" "$rep" "$(ratio "$tseq" "$tpar")"
			put "short${n}_c${cap}_ramp_ms" "$rep" "$(ramp_ms "$run" "$cap")"
			put "short${n}_c${cap}_close_ms" "$rep" "$(close_ms "$run")"
			if [ $n = 100 ]; then
				# Loaded: a second run of the same shape started in the same commit.
				runs=$(bq -c "WITH r AS (SELECT bf_start('s100_c10', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, 99) g))) AS id
				                           FROM generate_series(1, 2))
				              INSERT INTO bench_mark SELECT id FROM r RETURNING run_id" | paste -sd' ')
				for r in $runs; do bench_wait "$r"; done
				first=${runs%% *}
				put short100_c10_loaded_speedup "$rep" "$(ratio "$tseq" "$(elapsed "$first")")"
				put short100_c10_loaded_ramp_ms "$rep" "$(ramp_ms "$first" 10)"
			fi
		done
		log "short batches rep $rep: 20@4 $(awk -F'\t' -v r="$rep" '$1 == "short20_c4_speedup" && $2 == r { print $3 }' "$R")x," \
			"40@4 $(awk -F'\t' -v r="$rep" '$1 == "short40_c4_speedup" && $2 == r { print $3 }' "$R")x," \
			"100@10 $(awk -F'\t' -v r="$rep" '$1 == "short100_c10_speedup" && $2 == r { print $3 }' "$R")x," \
			"loaded $(awk -F'\t' -v r="$rep" '$1 == "short100_c10_loaded_speedup" && $2 == r { print $3 }' "$R")x"
	done
fi

# 4. HTTP at scale (bench/http.sh, its own cluster and endpoint) -------------------
if want 4; then
	for rep in $(seq 1 "$REPS"); do
		# http.sh exits non-zero when a run fails, a count is off, or the
		# loop's peak in flight differs from its cap (also when it stays
		# below it, as at cap 1000 here): say so, and keep the figures
		# of every cap it measured.
		rm -f "$BENCH_WORK/http.tsv"
		bash bench/http.sh --caps "200 1000" --reps 1 --tsv "$BENCH_WORK/http.tsv" >"$BENCH_WORK/http.out" 2>&1 ||
			log "http rep $rep: bench/http.sh reported: $(grep -h '^FAIL' "$BENCH_WORK/http.out" | tr '\n' ' ')"
		if [ -s "$BENCH_WORK/http.tsv" ]; then
			while IFS=$'\t' read -r cap _ _ rate _ _ ideal _ peak alone _ _; do
				put "http${cap}_items_per_s" "$rep" "$rate"
				put "http${cap}_alone_per_s" "$rep" "$alone"
				put "http${cap}_peak" "$rep" "$peak"
				put "http${cap}_vs_alone" "$rep" "$(ratio "$rate" "$alone")"
				put "http${cap}_vs_ideal" "$rep" "$(ratio "$rate" "$ideal")"
			done <"$BENCH_WORK/http.tsv"
			log "http rep $rep: $(tr '\t' ' ' <"$BENCH_WORK/http.tsv" | awk '{ printf "cap %s: %s items/s, peak %s in flight (endpoint alone %s/s); ", $1, $4, $9, $10 }')"
		else
			log "http rep $rep failed: $(tail -3 "$BENCH_WORK/http.out" | tr '\n' ' ')"
		fi
	done
fi

# Report ---------------------------------------------------------------------------
verdict() {	# verdict VALUE OP GOAL
	[ "$1" = - ] && { echo "not measured"; return; }
	awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= g : v <= g; print ok ? "pass" : "short" }'
}
row() {	# row GOAL TEXT KEY OP TARGET [unit]
	local m
	m=$(med "$3")
	printf '| %s | %s | %s%s%s | %s %s%s | %s |\n' "$1" "$2" "$m" "${6:-}" "$(range "$3")" "$4" "$5" "${6:-}" "$(verdict "$m" "$4" "$5")"
}
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "Issue 18 goals, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
	"$REPS repetition(s), $WORKERS workers, $(nproc) cores, load average $LOAD_START at the start, $LOAD_END at the end"
[ -n "$PEER_NOTE" ] && echo "graphile-worker: $PEER_NOTE" || echo "graphile-worker ${GW_VERSION:-}, same cluster, same repetition"
echo
echo "| goal | scenario | figure (median, min-max) | target | result |"
echo "|---|---|---|---|---|"
if want 1; then
	row 1 "start latency p50, commit to first item start (p90 $(med lat_p90_ms) ms; server CPU $(med lat_cpu_ms_per_run) ms per one-item run)" lat_p50_ms "<=" 1.0 " ms"
	[ -z "$PEER_NOTE" ] && row 1 "start latency vs graphile-worker's (its p50: $(med gw_lat_p50_ms) ms)" lat_vs_gw "<=" 0.5 x
fi
if want 2; then
	row 2 "bf_start/s of 5-item runs, pgbench -c 16, workers executing ($(med start_items_per_s) items/s meanwhile, drained $(med start_drain_s) s after; server CPU $(med start_cpu_ms_per_run) ms per run, its items included)" starts_per_s ">=" 2500
	echo "| 2 | runs completed/s of the same runs, first start to backlog drained | $(med start_runs_done_per_s)$(range start_runs_done_per_s) | (what bf_start/s means only when the workers keep up) | - |"
	[ -z "$PEER_NOTE" ] && echo "| 2 | graphile-worker add_job/s, pgbench -c 16, runner executing | $(med gw_add_job_per_s)$(range gw_add_job_per_s) | (compare) | bf_start / add_job $(med starts_vs_gw)x |"
fi
if want 3; then
	row 3 "20 x 100 ms at cap 4 over sequential" short20_c4_speedup ">=" 3.9 x
	row 3 "40 x 100 ms at cap 4 over sequential" short40_c4_speedup ">=" 3.92 x
	row 3 "100 x 100 ms at cap 10 over sequential, quiet" short100_c10_speedup ">=" 9.85 x
	row 3 "100 x 100 ms at cap 10, beside a second such run" short100_c10_loaded_speedup ">=" 9.5 x
	row 3 "ramp-up to the 4th item start, 20 items at cap 4" short20_c4_ramp_ms "<=" 5 " ms"
	row 3 "ramp-up to the 10th item start, 100 items at cap 10" short100_c10_ramp_ms "<=" 5 " ms"
	row 3 "ramp-up to the 10th item start, loaded" short100_c10_loaded_ramp_ms "<=" 5 " ms"
fi
if want 4; then
	row 4 "HTTP cap 200, 100 ms endpoint: items/s over the endpoint alone ($(med http200_items_per_s) vs $(med http200_alone_per_s)/s)" http200_vs_alone ">=" 0.9 x
	echo "| 4 | HTTP cap 1000 (max_concurrency 1000): items/s, over the endpoint alone, over ideal 10,000/s, largest number in flight | $(med http1000_items_per_s)$(range http1000_items_per_s) ($(med http1000_vs_alone)x alone, $(med http1000_vs_ideal)x ideal, peak $(med http1000_peak)) | measured | - |"
fi
[ -n "$TSV" ] && cp "$R" "$TSV"
exit 0
}
