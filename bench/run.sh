#!/bin/bash
# bench/run.sh - every benchmark scenario of batchflow on a throwaway
# cluster.  It measures and leaves the figures in bench/results (see
# --results); bench/report.sh then writes docs/performance.md and its
# charts (docs/img/perf-*.png) from them, which run.sh does at its end
# unless --no-report.
#
#   bash bench/run.sh            full run (about 20-30 minutes on 2 cores)
#   bash bench/run.sh --quick    one repetition, smaller sizes (a few minutes)
#
# Options: --reps N (default 3, quick 1), --out FILE (default
# docs/performance.md), --results DIR (default bench/results), --no-report
# (measure only), --no-peer (skip graphile-worker), --keep (keep the
# cluster directory).  Each figure is the median of the repetitions, with
# min and max; ratios are computed within one repetition (same cluster,
# same minute), since the machines are shared and noisy.
#
# Needs batchflow installed, pgbench, gnuplot; for the peer comparison
# node and npm (graphile-worker is installed from npm into a temporary
# directory, or taken from $BENCH_GW_DIR if that holds node_modules).
# As root, perf samples the workers for the profile section.
set -euo pipefail
# The whole script is one compound command, read before it runs, so that
# editing this file during a run cannot change the run.
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"

QUICK=0
REPS=
OUT=docs/performance.md
PEER=1
RESULTS=bench/results
REPORT=1
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--reps) REPS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--results) RESULTS=$2; shift ;;
	--no-report) REPORT=0 ;;
	--no-peer) PEER=0 ;;
	--keep) BENCH_KEEP=1 ;;
	*) echo "usage: bench/run.sh [--quick] [--reps N] [--out FILE] [--results DIR] [--no-report] [--no-peer] [--keep]" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$REPS" ] || REPS=$([ $QUICK = 1 ] && echo 1 || echo 3)
WORKERS=20
mkdir -p "$RESULTS"

trap bench_cluster_stop EXIT
T_BEGIN=$(date +%s)
log() { echo "[$(($(date +%s) - T_BEGIN))s] $*" >&2; }

bench_cluster_start "$WORKERS"
R=$BENCH_WORK/results.tsv	# key <tab> rep <tab> value
: >"$R"
put() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$R"; }
# stat KEY -> "median min max" over the repetitions
stat() {
	awk -F'\t' -v k="$1" '$1 == k { print $3 }' "$R" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
		       m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}
med() { stat "$1" | cut -d' ' -f1; }
log "cluster $BENCH_DIR port $BENCH_PORT, $WORKERS workers, $REPS repetition(s), quick=$QUICK"

# pg_stat_statements is preloaded for the profile section only; it tracks
# nothing until then.
cat >>"$BENCH_DIR/data/postgresql.conf" <<CONF
shared_preload_libraries = 'batchflow,pg_cron,pg_stat_statements'
pg_stat_statements.track = none
CONF
bash scripts/cluster.sh stop "$BENCH_DIR"
bash scripts/cluster.sh start "$BENCH_DIR" "$BENCH_PORT" postgres
bench_wait_workers "$WORKERS"

bq <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_stat_statements;
CREATE TABLE bench_sink (v int);
CREATE TABLE bench_mark (run_id bigint);
CREATE TABLE bench_log (run_id bigint, idx int, t0 timestamptz, t1 timestamptz);
CREATE FUNCTION bench_work(run bigint, idx int, ms int) RETURNS int LANGUAGE plpgsql AS $f$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    PERFORM pg_sleep(ms / 1000.0);
    INSERT INTO bench_log VALUES (run, idx, t0, clock_timestamp());
    RETURN idx;
END $f$;
SQL

# Workflows ------------------------------------------------------------------
bench_register seq10ms sequential 1 "SELECT pg_sleep(0.01)"
for c in 1 2 3 4 8 10; do
	bench_register "sleep100_c$c" parallel $c "SELECT pg_sleep(0.1)"
done
bench_register ins_c10 parallel 10 "INSERT INTO bench_sink (v) VALUES (\$2)"
bench_register noop_c10 parallel 10 "SELECT 1"
bench_register noop_c1 parallel 1 "SELECT 1"
bench_register load_c3 parallel 3 "SELECT bench_work((\$3->>'run')::bigint, \$2, 50)"
# (The division by zero must not be foldable, such as 1 / 0 or 1 / (\$2 % 5):
# the planner folds constants, and parameters in custom plans, and would
# raise it on every attempt, whatever the CASE says.)
bench_register retry_c10 parallel 10 \
	"SELECT CASE WHEN (\$3->'vars'->>'fail')::boolean AND \$2 % 5 = 0 AND a < 2 THEN 1 / (a - a) END FROM (SELECT attempts AS a FROM batchflow.item WHERE run_id = (\$3->>'run')::bigint AND idx = \$2) s, pg_sleep(0.05)" \
	'{"errorStrategy": "retry", "maxRetries": 3, "retryDelayMs": 100}'

# run_one WF N [extra input json]: start, wait, check every item succeeded;
# prints "run_id seconds".
run_one() {
	local wf=$1 n=$2 extra=${3:-'{}'} run
	run=$(bq -c "SELECT bf_start('$wf', jsonb_build_object('items', coalesce((SELECT jsonb_agg(g) FROM generate_series(0, $n - 1) g), '[]')) || '$extra'::jsonb)")
	bench_wait "$run" '30 minutes'
	local counts
	counts=$(bench_counts "$run")
	[ "$counts" = "$n 0 0" ] || { echo "run $run of $wf: items succeeded/failed/other = $counts, expected $n 0 0" >&2; exit 1; }
	echo "$run $(bench_elapsed "$run")"
}
secs() { run_one "$@" | cut -d' ' -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# 1. Sequential loops of 10 ms items ------------------------------------------
SEQ_NS="10 100 1000"
[ $QUICK = 1 ] && SEQ_NS="10 100"
for rep in $(seq 1 "$REPS"); do
	for n in $SEQ_NS; do
		s=$(secs seq10ms "$n")
		put "seq_$n" "$rep" "$s"
		put "seq_${n}_overhead_ms" "$rep" "$(awk -v s="$s" -v n="$n" 'BEGIN { printf "%.2f", (s - n * 0.01) * 1000 / n }')"
	done
done
log "sequential done"

# 2. Speedup at caps 1..10 for 100 x 100 ms -----------------------------------
# Where a run's time goes beyond the ideal: the median item duration
# (claim to completion; the work is 100 ms), the ramp-up (run start to the
# cap-th item's start), the tail (last item's end to the run's end) and the
# median gap between an item's end and the next item's start in one slot
# (exact for cap 1; for cap c, items are paired by start order).
run_detail() {	# run_detail RUN CAP REP
	local d
	d=$(bq -F ' ' <<SQL
WITH i AS (SELECT started_at, finished_at, row_number() OVER (ORDER BY started_at) AS n
             FROM batchflow.item WHERE run_id = $1),
     r AS (SELECT * FROM batchflow.run WHERE id = $1)
SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) * 1000)::numeric, 2),
       (SELECT round((extract(epoch FROM i.started_at - r.started_at) * 1000)::numeric, 2) FROM i, r WHERE n = $2),
       (SELECT round((extract(epoch FROM r.finished_at - max(i.finished_at)) * 1000)::numeric, 2) FROM i, r GROUP BY r.finished_at),
       (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM b.started_at - a.finished_at)) * 1000)::numeric, 2)
          FROM i a JOIN i b ON b.n = a.n + $2)
  FROM i
SQL
)
	set -- "$2" "$3" $d
	put "detail_c$1_dur_ms" "$2" "$3"
	put "detail_c$1_ramp_ms" "$2" "$4"
	put "detail_c$1_tail_ms" "$2" "$5"
	put "detail_c$1_gap_ms" "$2" "$6"
}
for rep in $(seq 1 "$REPS"); do
	for c in 1 2 4 8 10; do
		r=$(run_one "sleep100_c$c" 100)
		t=${r#* }
		[ $c = 1 ] && t1=$t
		put "speed_t_$c" "$rep" "$t"
		put "speedup_$c" "$rep" "$(ratio "$t1" "$t")"
		run_detail "${r% *}" $c "$rep"
	done
	log "speedup rep $rep: cap1 $t1 s, cap10 $t s"
done

# 3. 1000 items x 100 ms at cap 10 --------------------------------------------
if [ $QUICK = 0 ]; then
	for rep in $(seq 1 "$REPS"); do
		put big1000_c10 "$rep" "$(secs sleep100_c10 1000)"
	done
	log "1000 items done"
fi

# 4. Per-item overhead: 10,000 INSERT items at cap 10 vs pgbench ---------------
N_INS=10000
echo "INSERT INTO bench_sink (v) VALUES (1);" >"$BENCH_WORK/ins.sql"
pgbench_tps() {
	pgbench -n -c 10 -j 2 -t $((N_INS / 10)) -f "$BENCH_WORK/ins.sql" \
		-h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres postgres 2>/dev/null |
		sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p'
}
for rep in $(seq 1 "$REPS"); do
	bq -c "TRUNCATE bench_sink"
	s=$(secs ins_c10 $N_INS)
	rows=$(bq -c "SELECT count(*) FROM bench_sink")
	[ "$rows" = $N_INS ] || { echo "ins_c10: $rows rows, expected $N_INS" >&2; exit 1; }
	ips=$(awk -v s="$s" -v n=$N_INS 'BEGIN { printf "%.1f", n / s }')
	tps=$(pgbench_tps)
	[ -n "$tps" ] || { echo "pgbench failed" >&2; exit 1; }
	put ins_items_per_s "$rep" "$ips"
	put pgbench_tps "$rep" "$tps"
	put ins_vs_pgbench "$rep" "$(ratio "$ips" "$tps")"
	log "insert rep $rep: batchflow $ips items/s, pgbench $tps tps"
done

# 10. Progress tracking on vs off (same 10,000 INSERT items) -------------------
set_progress() {
	bq -c "ALTER SYSTEM SET batchflow.track_progress = $1" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 0.5
	[ "$(bq -c "SHOW batchflow.track_progress")" = "$1" ]
}
for rep in $(seq 1 "$REPS"); do
	set_progress on
	on=$(secs ins_c10 $N_INS)
	set_progress off
	off=$(secs ins_c10 $N_INS)
	set_progress on
	put progress_on_s "$rep" "$on"
	put progress_off_s "$rep" "$off"
	put progress_on_vs_off "$rep" "$(ratio "$on" "$off")"
	log "progress rep $rep: on $on s, off $off s"
done

# 6. Start latency: bf_start commit -> first item's start ---------------------
N_LAT=$([ $QUICK = 1 ] && echo 20 || echo 50)
for rep in $(seq 1 "$REPS"); do
	bq -c "TRUNCATE bench_mark"
	for _ in $(seq 1 $N_LAT); do
		run=$(bq -c "WITH r AS (SELECT bf_start('noop_c1', '{\"items\": [0]}') AS id) INSERT INTO bench_mark SELECT id FROM r RETURNING run_id")
		bench_wait "$run" '1 minute'
	done
	# The marker row is written in bf_start's transaction and never
	# updated, so its xmin's commit timestamp is bf_start's commit.
	lat=$(bq -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.started_at - pg_xact_commit_timestamp(m.xmin)) * 1000))::numeric, 3)
	               FROM bench_mark m JOIN batchflow.item i ON i.run_id = m.run_id")
	put start_latency_ms "$rep" "$lat"
	log "start latency rep $rep: median $lat ms over $N_LAT runs"
done

# 9. Error recovery: 100 x 50 ms items, 20% failing twice, retry 3 --------------
for rep in $(seq 1 "$REPS"); do
	ok=$(secs retry_c10 100 '{"fail": false}')
	r=$(run_one retry_c10 100 '{"fail": true}')
	run=${r% *}
	bad=${r#* }
	att=$(bq -F ' ' -c "SELECT count(*) FILTER (WHERE attempts = 3), count(*) FILTER (WHERE attempts = 1) FROM batchflow.item WHERE run_id = $run")
	[ "$att" = "20 80" ] || { echo "retry run $run: items with 3 / 1 attempts = $att, expected 20 80" >&2; exit 1; }
	put retry_ok_s "$rep" "$ok"
	put retry_fail_s "$rep" "$bad"
	put retry_ratio "$rep" "$(ratio "$bad" "$ok")"
	log "retry rep $rep: no failures $ok s, 20% failing twice $bad s"
done

# 8. Load: 10 and 50 concurrent runs of 100 x 50 ms items at cap 3 -------------
LOADS="10 50"
for rep in $(seq 1 "$REPS"); do
	for k in $LOADS; do
		bq -c "TRUNCATE bench_log"
		runs=$(bq -c "SELECT string_agg(bf_start('load_c3', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, 99) g)))::text, ',') FROM generate_series(1, $k)")
		for run in ${runs//,/ }; do bench_wait "$run" '30 minutes'; done
		IFS='|' read -r wall tput maxov minov p50 p95 p99 rmin rmax nitems <<<"$(bq <<SQL
WITH r AS (SELECT * FROM batchflow.run WHERE id IN ($runs)),
     i AS (SELECT * FROM batchflow.item WHERE run_id IN ($runs)),
     ev AS (SELECT run_id, t0 AS t, 1 AS d FROM bench_log UNION ALL SELECT run_id, t1, -1 FROM bench_log),
     ov AS (SELECT run_id, max(n) AS m FROM (SELECT run_id, sum(d) OVER (PARTITION BY run_id ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n FROM ev) s GROUP BY run_id),
     w AS (SELECT extract(epoch FROM max(finished_at) - min(started_at)) AS s FROM r)
SELECT round(w.s::numeric, 3),
       round(((SELECT count(*) FROM i WHERE status = 'succeeded') / w.s)::numeric, 1),
       (SELECT max(m) FROM ov), (SELECT min(m) FROM ov),
       (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) * 1000)::numeric, 1) FROM i),
       (SELECT round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) * 1000)::numeric, 1) FROM i),
       (SELECT round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) * 1000)::numeric, 1) FROM i),
       (SELECT round(extract(epoch FROM min(finished_at - started_at))::numeric, 2) FROM r),
       (SELECT round(extract(epoch FROM max(finished_at - started_at))::numeric, 2) FROM r),
       (SELECT count(*) FROM i WHERE status = 'succeeded') || '/' || (SELECT count(*) FROM bench_log)
  FROM w
SQL
)"
		[ "$nitems" = "$((k * 100))/$((k * 100))" ] || { echo "load $k: succeeded/logged = $nitems" >&2; exit 1; }
		[ "$maxov" -le 3 ] || { echo "load $k: cap 3 exceeded, max overlap $maxov" >&2; exit 1; }
		put "load${k}_wall_s" "$rep" "$wall"
		put "load${k}_items_per_s" "$rep" "$tput"
		put "load${k}_max_overlap" "$rep" "$maxov"
		put "load${k}_min_overlap" "$rep" "$minov"
		put "load${k}_p50_ms" "$rep" "$p50"
		put "load${k}_p95_ms" "$rep" "$p95"
		put "load${k}_p99_ms" "$rep" "$p99"
		put "load${k}_run_min_s" "$rep" "$rmin"
		put "load${k}_run_max_s" "$rep" "$rmax"
		log "load $k runs rep $rep: wall $wall s, $tput items/s, overlap $minov..$maxov, p95 $p95 ms p99 $p99 ms"
	done
done

# 5. Peer: batchflow side of the graphile-worker scenarios ---------------------
for rep in $(seq 1 "$REPS"); do
	s=$(secs noop_c10 10000)
	put noop_items_per_s "$rep" "$(awk -v s="$s" 'BEGIN { printf "%.1f", 10000 / s }')"
	put batch1_c1_s "$rep" "$(secs sleep100_c1 100)"
	# Two batches of 50 at cap 4 each, started together: first start to last end.
	runs=$(bq -c "SELECT string_agg(bf_start('sleep100_c4', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, 49) g)))::text, ',') FROM generate_series(1, 2)")
	for run in ${runs//,/ }; do bench_wait "$run" '10 minutes'; done
	put batch2_c4_s "$rep" "$(bq -c "SELECT round(extract(epoch FROM max(finished_at) - min(started_at))::numeric, 3) FROM batchflow.run WHERE id IN ($runs)")"
	log "peer scenarios (batchflow) rep $rep done"
done

# 5. Peer: graphile-worker on the same cluster --------------------------------
PEER_NOTE=
if [ $PEER = 1 ]; then
	GW=${BENCH_GW_DIR:-$BENCH_WORK/gw}
	if [ ! -d "$GW/node_modules/graphile-worker" ]; then
		mkdir -p "$GW"
		if ! command -v npm >/dev/null; then
			PEER_NOTE="npm is not installed"
		elif ! (cd "$GW" && npm init -y >/dev/null && npm install --no-audit --no-fund graphile-worker >"$GW/npm.log" 2>&1); then
			PEER_NOTE="npm install graphile-worker failed: $(tail -3 "$GW/npm.log" | tr '\n' ' ')"
		fi
	fi
	if [ -z "$PEER_NOTE" ]; then
		cp bench/graphile.mjs "$GW/"
		GW_VERSION=$(node -p "require('$GW/node_modules/graphile-worker/package.json').version")
		CONN="postgres://postgres@/postgres?host=$BENCH_DIR&port=$BENCH_PORT"
		gw() { (cd "$GW" && node graphile.mjs "$CONN" "$@"); }
		jget() { node -e "const r = JSON.parse(process.argv[1]); console.log(r['$1'])" "$2"; }
		for rep in $(seq 1 "$REPS"); do
			j=$(gw noop 10000 10) || { PEER_NOTE="graphile-worker noop run failed"; break; }
			put gw_noop_per_s "$rep" "$(jget jobs_per_sec "$j")"
			j=$(GW_TUNED=1 gw noop 10000 10)
			put gw_noop_tuned_per_s "$rep" "$(jget jobs_per_sec "$j")"
			j=$(gw batches 2 50 4 100 10)
			put gw_batch2_c4_s "$rep" "$(jget seconds "$j")"
			put gw_batch2_c4_overlap "$rep" "$(jget max_overlap_per_batch "$j" | tr ',' ' ')"
			j=$(gw latency $N_LAT)
			put gw_start_latency_ms "$rep" "$(jget median_ms "$j")"
			log "graphile-worker rep $rep done"
		done
		# Its serial queue takes about a minute for one batch: measured once in
		# a quick run, REPS times otherwise.
		for rep in $(seq 1 "$REPS"); do
			j=$(gw batches 1 100 1 100 10)
			put gw_batch1_c1_s "$rep" "$(jget seconds "$j")"
			log "graphile-worker serial batch rep $rep: $(jget seconds "$j") s"
		done
	fi
else
	PEER_NOTE="skipped (--no-peer)"
fi

# 7. Fan-out: bf_start of 100k and 1M items; worker memory over a big loop -----
FAN_NS="100000 1000000"
[ $QUICK = 1 ] && FAN_NS="100000"
for n in $FAN_NS; do
	bq -c "DROP TABLE IF EXISTS fan_input" -c "CREATE TABLE fan_input AS SELECT jsonb_build_object('items', jsonb_agg(g)) AS j FROM generate_series(0, $n - 1) g"
	for rep in $(seq 1 "$REPS"); do
		# Inside a transaction that rolls back: the time of bf_start itself
		# (creating the run and its n items), not of executing them.
		s=$(bq <<'SQL'
BEGIN;
SELECT clock_timestamp() AS t0 \gset
SELECT bf_start('noop_c10', j) FROM fan_input \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
ROLLBACK;
SQL
)
		put "fanout_$n" "$rep" "$s"
		log "fan-out $n rep $rep: $s s"
	done
	bq -c "VACUUM batchflow.item"
done
rss() {	# "sum of VmRSS kB, sum of RssAnon kB, max VmRSS kB" of the workers
	local pids vm an
	pids=$(bq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow worker'")
	for p in $pids; do
		vm=$(awk '/^VmRSS/ { print $2 }' /proc/"$p"/status)
		an=$(awk '/^RssAnon/ { print $2 }' /proc/"$p"/status)
		echo "$vm $an"
	done | awk '{ v += $1; a += $2; if ($1 > m) m = $1 } END { print v, a, m }'
}
BIG=${FAN_NS##* }
BIG_LIMIT=$([ $QUICK = 1 ] && echo 120 || echo 420)	# seconds
read -r rss_b anon_b max_b <<<"$(rss)"
s=$(bq <<SQL
SELECT clock_timestamp() AS t0 \gset
SELECT bf_start('noop_c10', j) AS big FROM fan_input \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
SELECT :big;
SQL
)
big_start=$(echo "$s" | head -1)
big_run=$(echo "$s" | tail -1)
# Follow its progress about every 10 s (items/s over time), for at most
# BIG_LIMIT seconds; a loop still running then is cancelled.
RATE_DAT=$RESULTS/perf-bigloop.dat
echo "# seconds completed items_per_s_in_interval workers_rss_anon_kb" >"$RATE_DAT"
t_big=$(date +%s)
prev=0
prev_el=0
big_done=0
while :; do
	st=$(bq -c "SELECT bf_wait($big_run, '10 seconds')")
	el=$(($(date +%s) - t_big))
	done_n=$(bq -c "SELECT count(*) FROM batchflow.item WHERE loop_ref = (SELECT min(id) FROM batchflow.loop WHERE run_id = $big_run) AND status = 'succeeded'")
	# (No row for a wait that only saw the end: it would show 0 items/s.)
	[ "$done_n" = "$prev" ] && [ "$st" = succeeded ] ||
		echo "$el $done_n $(((done_n - prev) / (el > prev_el ? el - prev_el : 1))) $(rss | cut -d' ' -f2)" >>"$RATE_DAT"
	prev=$done_n
	prev_el=$el
	# Once, a third of the way in: what one claim costs now.
	if [ -z "${CLAIM_EXPLAIN:-}" ] && [ "$done_n" -ge $((BIG / 3)) ] && [ "$st" = running ]; then
		CLAIM_DONE=$done_n
		CLAIM_EXPLAIN=$(bq <<SQL
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT idx, item, attempts FROM batchflow.item
 WHERE loop_ref = (SELECT min(id) FROM batchflow.loop WHERE run_id = $big_run) AND status = 'pending'
   AND (not_before IS NULL OR not_before <= clock_timestamp())
 ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED;
ROLLBACK;
SQL
)
	fi
	case $st in
	succeeded) big_done=1; break ;;
	running | pending) [ "$el" -ge "$BIG_LIMIT" ] && break ;;
	*) echo "big loop run $big_run ended '$st'" >&2; exit 1 ;;
	esac
done
read -r rss_a anon_a max_a <<<"$(rss)"
put fanout_committed_s 1 "$big_start"
if [ $big_done = 1 ]; then
	big_s=$(bench_elapsed "$big_run")
	put bigloop_s 1 "$big_s"
	put bigloop_items_per_s 1 "$(awk -v s="$big_s" -v n="$BIG" 'BEGIN { printf "%.1f", n / s }')"
	BIG_NOTE="its loop of no-op items then ran in $(printf %.1f "$big_s") s ($(awk -v s="$big_s" -v n="$BIG" 'BEGIN { printf "%.0f", n / s }') items/s at cap 10)"
else
	bq -c "SELECT bf_cancel($big_run)" >/dev/null
	bench_wait_any() { bq -c "SELECT bf_wait($1, '10 minutes')" >/dev/null; }
	bench_wait_any "$big_run"
	put bigloop_partial_items 1 "$prev"
	BIG_NOTE="its loop of no-op items had completed only $prev items after $el s ($((prev / el)) items/s on average), so it was cancelled there (bench time limit)"
fi
put rss_before_kb 1 "$rss_b"; put rss_after_kb 1 "$rss_a"
put anon_before_kb 1 "$anon_b"; put anon_after_kb 1 "$anon_a"
put rss_max_before_kb 1 "$max_b"; put rss_max_after_kb 1 "$max_a"
log "big loop of $BIG items: bf_start $big_start s (committed); $BIG_NOTE; worker RSS $rss_b -> $rss_a kB, anon $anon_b -> $anon_a kB"
bq -c "DROP TABLE fan_input" -c "VACUUM batchflow.item"

# Profile: what a worker spends its time on for tiny items -------------------
N_PROF=$([ $QUICK = 1 ] && echo 20000 || echo 40000)
bq -c "ALTER SYSTEM SET pg_stat_statements.track = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
bq -c "SELECT pg_stat_statements_reset()" >/dev/null
run=$(bq -c "SELECT bf_start('ins_c10', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, $N_PROF - 1) g)))")
PERF_DATA=$BENCH_WORK/perf.data
perf_pid=
if [ "$(id -u)" = 0 ] && command -v perf >/dev/null; then
	pids=$(bq -c "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type IN ('batchflow worker', 'walwriter')")
	perf record -q -F 999 -g -p "$pids" -o "$PERF_DATA" -- sleep 3 >/dev/null 2>&1 &
	perf_pid=$!
fi
# Sample the wait events of the active workers until the run ends.
# Sample the wait events of the active workers every ~5 ms until the run
# ends, server-side (pg_stat_clear_snapshot: a fresh view each time).
bq -c "CREATE TABLE bench_waits (w text)"
bq <<SQL
DO \$\$
BEGIN
    FOR i IN 1..20000 LOOP
        PERFORM pg_stat_clear_snapshot();
        INSERT INTO bench_waits
        SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait event)')
          FROM pg_stat_activity WHERE backend_type = 'batchflow worker' AND state = 'active';
        EXIT WHEN (SELECT status FROM batchflow.run WHERE id = $run) <> 'running';
        PERFORM pg_sleep(0.005);
    END LOOP;
END \$\$;
SQL
bq -c "SELECT w FROM bench_waits" >"$BENCH_WORK/waits.txt"
[ -n "$perf_pid" ] && wait "$perf_pid" || true
bench_wait "$run" '10 minutes'
put profile_items_per_s 1 "$(awk -v s="$(bench_elapsed "$run")" -v n=$N_PROF 'BEGIN { printf "%.1f", n / s }')"
WAITS=$(sort "$BENCH_WORK/waits.txt" | uniq -c | sort -rn | head -10 |
	awk -v t="$(wc -l <"$BENCH_WORK/waits.txt")" '{ n = $1; $1 = ""; printf "| %s | %d | %.0f%% |\n", substr($0, 2), n, 100 * n / t }' || true)
STMTS=$(bq -c "SELECT format('| %s | %s | %s | %s |', calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3),
                              replace(left(regexp_replace(query, '\s+', ' ', 'g'), 140), '|', '\|'))
                 FROM pg_stat_statements
                WHERE query NOT LIKE '%pg_stat_activity%' AND query NOT LIKE '%pg_stat_statements%'
                  AND query NOT LIKE '%bench_waits%' AND query <> 'SELECT pg_sleep(\$1)'
                ORDER BY total_exec_time DESC LIMIT 10")
PERF=
if [ -s "$PERF_DATA" ]; then
	PERF_SAMPLES=$(perf report -i "$PERF_DATA" --stdio --no-children --sort comm 2>/dev/null | sed -n 's/^# Samples: \([0-9.]*[KM]*\).*/\1/p' | head -1 || true)
	PERF=$(perf report -i "$PERF_DATA" --stdio --no-children --sort dso,symbol 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -25 | sed 's/^ *//; s/ *$//' || true)
fi
bq -c "ALTER SYSTEM SET pg_stat_statements.track = 'none'" -c "SELECT pg_reload_conf()" >/dev/null
log "profile done"

# Start latency against the size of the worker pool: every bf_start commit
# wakes every worker, so compare pools of 2, 10 and 20 (restarts).
POOLS="2 10 $WORKERS"
for w in $POOLS; do
	bq -c "ALTER SYSTEM SET batchflow.max_workers = $w" >/dev/null
	bash scripts/cluster.sh stop "$BENCH_DIR"
	bash scripts/cluster.sh start "$BENCH_DIR" "$BENCH_PORT" postgres
	bench_wait_workers "$w"
	sleep 1
	for rep in $(seq 1 "$REPS"); do
		bq -c "TRUNCATE bench_mark"
		for _ in $(seq 1 $N_LAT); do
			run=$(bq -c "WITH r AS (SELECT bf_start('noop_c1', '{\"items\": [0]}') AS id) INSERT INTO bench_mark SELECT id FROM r RETURNING run_id")
			bench_wait "$run" '1 minute'
		done
		put "pool${w}_latency_ms" "$rep" "$(bq -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.started_at - pg_xact_commit_timestamp(m.xmin)) * 1000))::numeric, 3)
	               FROM bench_mark m JOIN batchflow.item i ON i.run_id = m.run_id")"
	done
	log "start latency with $w workers: $(med pool${w}_latency_ms) ms"
done
bq -c "ALTER SYSTEM RESET batchflow.max_workers" >/dev/null

# Round 2 goals (issue 18): bench/goals.sh on its own cluster, same repetitions -----
GOALS_OUT=$RESULTS/goals.md
GOALS_PROFILE=$RESULTS/goals-profile.md
if ! bash bench/goals.sh --reps "$REPS" --goals "1 2 3 4" $([ $PEER = 0 ] && echo --no-peer) \
	--profile "$GOALS_PROFILE" >"$GOALS_OUT" 2>"$RESULTS/goals.log"; then
	echo "bench/goals.sh failed: $(tail -3 "$RESULTS/goals.log" | tr '\n' ' ')" >"$GOALS_OUT"
fi
log "round 2 goals done"

# Hand the figures to the report --------------------------------------------------
HOST="$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)"
PGV=$(bq -c "SHOW server_version")
NWORKERS_UP=$(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker'")
LOAD_AVG=$(cut -d' ' -f1-3 /proc/loadavg)
DUR=$(($(date +%s) - T_BEGIN))
MEASURED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cp "$R" "$RESULTS/results.tsv"
for v in WORKERS REPS QUICK PEER_NOTE GW_VERSION BIG BIG_NOTE RATE_DAT CLAIM_DONE CLAIM_EXPLAIN \
	WAITS STMTS PERF PERF_SAMPLES N_PROF N_LAT LOADS POOLS SEQ_NS FAN_NS HOST PGV LOAD_AVG DUR \
	anon_a anon_b rss_a rss_b max_a max_b NWORKERS_UP MEASURED_AT COMMIT GOALS_OUT GOALS_PROFILE; do
	if [ -n "${!v+x}" ]; then declare -p "$v"; fi
done >"$RESULTS/vars.sh"
log "figures in $RESULTS/"
[ $REPORT = 1 ] && bash "$BENCH_ROOT/bench/report.sh" "$RESULTS" "$OUT"
grep -v '^\[' "$GOALS_OUT"
exit 0
}
