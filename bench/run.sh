#!/bin/bash
# bench/run.sh - every benchmark scenario of batchflow on a throwaway
# cluster; writes docs/performance.md and its charts (docs/img/perf-*.png).
#
#   bash bench/run.sh            full run (about 20-30 minutes on 2 cores)
#   bash bench/run.sh --quick    one repetition, smaller sizes (a few minutes)
#
# Options: --reps N (default 3, quick 1), --out FILE (default
# docs/performance.md), --no-peer (skip graphile-worker), --keep (keep the
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
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--reps) REPS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--no-peer) PEER=0 ;;
	--keep) BENCH_KEEP=1 ;;
	*) echo "usage: bench/run.sh [--quick] [--reps N] [--out FILE] [--no-peer] [--keep]" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$REPS" ] || REPS=$([ $QUICK = 1 ] && echo 1 || echo 3)
WORKERS=20
IMG=$(dirname "$OUT")/img
mkdir -p "$IMG"

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
RATE_DAT=$IMG/perf-bigloop.dat
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
GOALS_OUT=$BENCH_WORK/goals.md
GOALS_PROFILE=$BENCH_WORK/goals-profile.md
if ! bash bench/goals.sh --reps "$REPS" --goals "1 2 3 4" $([ $PEER = 0 ] && echo --no-peer) \
	--profile "$GOALS_PROFILE" >"$GOALS_OUT" 2>"$BENCH_WORK/goals.log"; then
	echo "bench/goals.sh failed: $(tail -3 "$BENCH_WORK/goals.log" | tr '\n' ' ')" >"$GOALS_OUT"
fi
# Goal 5 is bench/breaking.sh (too long for this run): its last figures.
BREAKING=
for f in runs items workers; do
	[ -s "$IMG/break-$f.dat" ] && BREAKING="$BREAKING
$(sed 's/^/    /' "$IMG/break-$f.dat")"
done
log "round 2 goals done"

# Report -----------------------------------------------------------------------
# fig KEY [fmt] [unit]: "median unit (min–max)", or just "value unit" for
# one repetition, or "not measured"
fig() {
	local fmt=${2:-%.2f} unit=${3:-} m lo hi
	read -r m lo hi <<<"$(stat "$1")"
	[ "$m" = - ] && { echo "not measured"; return; }
	if [ "$(awk -F'\t' -v k="$1" '$1 == k' "$R" | wc -l)" -gt 1 ]; then
		printf "$fmt%s ($fmt–$fmt)" "$m" "$unit" "$lo" "$hi"
	else
		printf "$fmt%s" "$m" "$unit"
	fi
}
# verdict VALUE OP GOAL -> pass / short
verdict() {
	[ "$1" = - ] && { echo "not measured"; return; }
	awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= g : v <= g; print ok ? "pass" : "**short**" }'
}

# Charts
SPEED_DAT=$IMG/perf-speedup.dat
{
	echo "# cap median min max ideal"
	for c in 1 2 4 8 10; do echo "$c $(stat "speedup_$c") $c"; done
} >"$SPEED_DAT"
gnuplot <<GP
set terminal pngcairo size 720,480 font ",11" noenhanced
set output '$IMG/perf-speedup.png'
set title "100 items x 100 ms: speedup over cap 1 (median of $REPS, min-max bars)"
set xlabel "loop concurrency cap"
set ylabel "speedup"
set key top left
set grid
set xrange [0:11]
set yrange [0:11]
set xtics (1, 2, 4, 8, 10)
plot x title "ideal" with lines dashtype 2 lc rgb "#888888", \
     '$SPEED_DAT' using 1:2:3:4 title "batchflow" with yerrorlines lw 2 pt 7 lc rgb "#1f77b4", \
     '-' using 1:2 title "goal (3.97x at 4, 9.85x at 10)" with points pt 6 ps 2 lc rgb "#d62728"
4 3.97
10 9.85
e
GP
THRU_DAT=$IMG/perf-throughput.dat
{
	echo "# label items_per_s"
	echo "\"pgbench INSERT\" $(med pgbench_tps)"
	echo "\"batchflow INSERT items\" $(med ins_items_per_s)"
	echo "\"batchflow no-op items\" $(med noop_items_per_s)"
	if [ -z "$PEER_NOTE" ]; then
		echo "\"graphile-worker no-op\" $(med gw_noop_per_s)"
		echo "\"graphile-worker tuned\" $(med gw_noop_tuned_per_s)"
	fi
} >"$THRU_DAT"
gnuplot <<GP
set terminal pngcairo size 720,480 font ",11" noenhanced
set output '$IMG/perf-throughput.png'
set title "10,000 tiny units of work at concurrency 10 (median of $REPS)"
set ylabel "per second (higher is better)"
set style fill solid 0.7
set boxwidth 0.6
set grid ytics
set yrange [0:*]
set xtics rotate by -20
plot '$THRU_DAT' using 0:2:xtic(1) with boxes lc rgb "#1f77b4" notitle, \
     '' using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,1 notitle
GP
LOAD_DAT=$IMG/perf-load.dat
{
	echo "# runs p50 p95 p99"
	for k in $LOADS; do echo "$k $(med load${k}_p50_ms) $(med load${k}_p95_ms) $(med load${k}_p99_ms)"; done
} >"$LOAD_DAT"
gnuplot <<GP
set terminal pngcairo size 720,480 font ",11" noenhanced
set output '$IMG/perf-load.png'
set title "Item duration (claim to completion) of 50 ms items, cap 3 per run"
set xlabel "concurrent runs of 100 items"
set ylabel "ms"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.7
set grid ytics
set yrange [0:*]
plot '$LOAD_DAT' using 2:xtic(1) title "p50", '' using 3 title "p95", '' using 4 title "p99"
GP

gnuplot <<GP
set terminal pngcairo size 720,480 font ",11" noenhanced
set output '$IMG/perf-bigloop.png'
set title "Loop of $BIG no-op items at cap 10: throughput over time"
set xlabel "seconds since bf_start"
set ylabel "items/s between samples"
set grid
set yrange [0:*]
plot '$RATE_DAT' using 1:3 with linespoints lw 2 pt 7 lc rgb "#1f77b4" notitle
GP

FENCE='```'
HOST="$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)"
PGV=$(bq -c "SHOW server_version")
LOAD_AVG=$(cut -d' ' -f1-3 /proc/loadavg)
DUR=$(($(date +%s) - T_BEGIN))
m_s4=$(med speedup_4); m_s10=$(med speedup_10); m_big=$(med big1000_c10)
m_ins=$(med ins_vs_pgbench); m_lat=$(med start_latency_ms); m_fan1m=$(med fanout_1000000)
m_b1=$(med batch1_c1_s); m_b2=$(med batch2_c4_s)
gw_ratio=-; gw_ratio_t=-
if [ -z "$PEER_NOTE" ]; then
	gw_ratio=$(awk -v a="$(med noop_items_per_s)" -v b="$(med gw_noop_per_s)" 'BEGIN { printf "%.2f", a / b }')
	gw_ratio_t=$(awk -v a="$(med noop_items_per_s)" -v b="$(med gw_noop_tuned_per_s)" 'BEGIN { printf "%.2f", a / b }')
fi
mem_growth=$(awk -v a="$anon_b" -v b="$anon_a" -v n="$(echo $(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker'"))" 'BEGIN { printf "%.0f", (b - a) / n }')

{
cat <<EOF
# Performance

Generated by \`bash bench/run.sh$([ $QUICK = 1 ] && echo " --quick")\` on $(date -u '+%Y-%m-%d %H:%M UTC'),
commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`, in $((DUR / 60)) min $((DUR % 60)) s.
Machine: $HOST; PostgreSQL $PGV; load average at the end $LOAD_AVG.
**The machine is shared with other engineers' test runs**: absolute times are
noisy; ratios are computed within one repetition (same cluster, same minute)
and then their median is taken. Each figure is the median of $REPS
repetition(s), with (min–max) where there are several.

Setup: a throwaway cluster (\`scripts/cluster.sh\`, fsync on, unix socket),
\`batchflow.max_workers = $WORKERS\` (a postmaster setting, so it is written to
postgresql.conf before start), \`shared_buffers = 256MB\`,
\`track_commit_timestamp = on\` (for the start latency), pg_stat_statements
preloaded but tracking nothing until the profile section. Run times are
\`finished_at - started_at\` of \`batchflow.runs\`: from the \`bf_start\`
transaction to the run's completion, so they include the wake-up of the
workers and the closing of the loop.

## Goals

| # | scenario | figure | goal | result |
|---|---|---|---|---|
| 2 | speedup at cap 4, 100 x 100 ms | $(fig speedup_4 %.2f "x") | ≥ 3.97x | $(verdict "$m_s4" ">=" 3.97) |
| 2 | speedup at cap 10, 100 x 100 ms | $(fig speedup_10 %.2f "x") | ≥ 9.85x | $(verdict "$m_s10" ">=" 9.85) |
| 3 | 1000 x 100 ms at cap 10 | $(fig big1000_c10 %.2f " s") | ≤ 10.5 s (ideal 10 s + 5%) | $(verdict "$m_big" "<=" 10.5) |
| 4 | 10,000 INSERT items at cap 10 vs pgbench -c 10 | $(fig ins_vs_pgbench %.2f "x") | ≥ 0.5x | $(verdict "$m_ins" ">=" 0.5) |
| 5 | 10,000 no-op items at cap 10 vs graphile-worker | $(if [ -z "$PEER_NOTE" ]; then echo "${gw_ratio}x (vs its tuned config: ${gw_ratio_t}x)"; else echo "not measured: $PEER_NOTE"; fi) | ≥ 3x | $(verdict "$gw_ratio" ">=" 3) |
| 5 | one batch 100 x 100 ms at cap 1 | $(fig batch1_c1_s %.2f " s") | ≤ 10.3 s | $(verdict "$m_b1" "<=" 10.3) |
| 5 | two batches 50 x 100 ms at cap 4 each | $(fig batch2_c4_s %.2f " s") | ≤ 1.4 s | $(verdict "$m_b2" "<=" 1.4) |
| 6 | start latency, bf_start commit to first item start | $(fig start_latency_ms %.2f " ms") | ≤ 1.5 ms | $(verdict "$m_lat" "<=" 1.5) |
| 7 | bf_start of 1,000,000 items | $(fig fanout_1000000 %.2f " s") | ≤ 3 s | $(verdict "$m_fan1m" "<=" 3) |
| 7 | worker private memory (RssAnon) growth over a $BIG-item loop | $mem_growth kB per worker | flat | $(verdict "$mem_growth" "<=" 1024) |
| 8 | cap 3 never exceeded, 10 and 50 concurrent runs | max overlap $(med load10_max_overlap) and $(med load50_max_overlap) | ≤ 3 | $(verdict "$(awk -v a="$(med load10_max_overlap)" -v b="$(med load50_max_overlap)" 'BEGIN { print (a > b) ? a : b }')" "<=" 3) |
| 9 | 20% failing twice, retry 3: all complete | $(fig retry_ratio %.2f "x") the no-failure time | all 100 succeed | pass (checked: 20 items with 3 attempts, 80 with 1) |

"Flat" memory is judged as under 1 MB of private memory growth per worker.

![speedup](img/perf-speedup.png)

## 1. Sequential loops (10 ms of SQL work per item)

| items | time (s) | ideal (s) | overhead per item (ms) |
|---|---|---|---|
EOF
for n in $SEQ_NS; do
	echo "| $n | $(fig seq_$n %.3f) | $(awk -v n="$n" 'BEGIN { printf "%.2f", n * 0.01 }') | $(fig seq_${n}_overhead_ms) |"
done
cat <<EOF

## 2. Speedup, 100 items of 100 ms (\`SELECT pg_sleep(0.1)\`)

| cap | time (s) | ideal (s) | speedup over cap 1 | ideal |
|---|---|---|---|---|
EOF
for c in 1 2 4 8 10; do
	echo "| $c | $(fig speed_t_$c %.3f) | $(awk -v c="$c" 'BEGIN { printf "%.2f", 10 / c }') | $(fig speedup_$c %.2f "x") | ${c}x |"
done
cat <<EOF

Where the time goes beyond the ideal (medians over the repetitions):

| cap | item duration p50 (ms; work = 100) | ramp-up to the cap-th start (ms) | gap end → next start in a slot, p50 (ms) | tail: last item end → run end (ms) |
|---|---|---|---|---|
$(for c in 1 2 4 8 10; do echo "| $c | $(med detail_c${c}_dur_ms) | $(med detail_c${c}_ramp_ms) | $(med detail_c${c}_gap_ms) | $(med detail_c${c}_tail_ms) |"; done)

## 3. 1000 items of 100 ms at cap 10

$(fig big1000_c10 %.2f " s") against an ideal of 10 s (seed target < 45 s; goal within 5%).

## 4. Per-item overhead: 10,000 one-row INSERT items at cap 10 vs pgbench

Same table (\`bench_sink\`), same statement, same cluster, same repetition:
batchflow items \`INSERT INTO bench_sink (v) VALUES (\$2)\`, pgbench
\`-n -c 10 -j 2 -t 1000\` with a script holding \`INSERT INTO bench_sink (v) VALUES (1);\`.

| | per second |
|---|---|
| batchflow items | $(fig ins_items_per_s %.0f) |
| pgbench transactions | $(fig pgbench_tps %.0f) |
| ratio | $(fig ins_vs_pgbench %.2f "x") |

Note that batchflow executes short items of one loop in one transaction
(\`batchflow.batch_time\`, default 2 ms), so it is not bound to one commit per
item the way pgbench is.

![throughput](img/perf-throughput.png)

## 5. Peer: graphile-worker

EOF
if [ -n "$PEER_NOTE" ]; then
	echo "Not measured: $PEER_NOTE."
else
	cat <<EOF
graphile-worker $GW_VERSION (npm), node $(node --version), on the same cluster,
driven by \`bench/graphile.mjs\` with its logging off. "tuned" uses its
batching options (\`localQueue.size = 500\`, \`completeJobBatchDelay = 0\`).
Per-batch caps do not exist in graphile-worker; the only emulation is named
queues (each is serial): 1 queue for cap 1, 4 queues per batch for cap 4.

| scenario | batchflow | graphile-worker | ratio |
|---|---|---|---|
| 10,000 no-op units at concurrency 10 (per s) | $(fig noop_items_per_s %.0f) | $(fig gw_noop_per_s %.0f) (tuned $(fig gw_noop_tuned_per_s %.0f)) | ${gw_ratio}x (tuned ${gw_ratio_t}x) |
| one batch 100 x 100 ms at cap 1 (s, ideal 10) | $(fig batch1_c1_s) | $(fig gw_batch1_c1_s) | $(awk -v a="$(med gw_batch1_c1_s)" -v b="$m_b1" 'BEGIN { printf "%.1f", a / b }')x faster |
| two batches 50 x 100 ms at cap 4 (s, ideal 1.25) | $(fig batch2_c4_s) | $(fig gw_batch2_c4_s) | $(awk -v a="$(med gw_batch2_c4_s)" -v b="$m_b2" 'BEGIN { printf "%.1f", a / b }')x faster |
| start latency (ms, median) | $(fig start_latency_ms %.2f) | $(fig gw_start_latency_ms %.2f) | |

batchflow's no-op item is an SQL activity \`SELECT 1\`; graphile-worker's
no-op job is an empty JavaScript task. graphile-worker's start latency is
measured from the \`add_job\` statement's return to the task's start, which
is slightly in its favour (it omits the commit's round trip).
EOF
fi
cat <<EOF

## 6. Start latency

Median over $N_LAT one-item runs per repetition, from the commit timestamp of
the \`bf_start\` transaction (\`pg_xact_commit_timestamp\` of a marker row
written in that transaction) to the item's \`started_at\`: $(fig start_latency_ms %.2f " ms").

Every \`bf_start\` commit sets the latch of every worker of the pool
(\`bf_wake_workers\` in src/shmem.c), so with a one-item run all of them
wake up, start a transaction and look for work, and only one finds it. The
same measurement with pools of different sizes (restarting the cluster
with another \`batchflow.max_workers\`, at the end of the bench):

| batchflow.max_workers | median start latency (ms) |
|---|---|
$(for w in $POOLS; do echo "| $w | $(fig pool${w}_latency_ms %.2f) |"; done)

## 7. Fan-out and worker memory

| items | bf_start time (s) |
|---|---|
EOF
for n in $FAN_NS; do echo "| $n | $(fig fanout_$n %.3f) |"; done
cat <<EOF

\`bf_start\` is timed inside a transaction that is then rolled back (it
creates the run and all its items; executing them is not included). A
committed \`bf_start\` of $BIG items, including its commit, took
$(fig fanout_committed_s %.2f " s"); $BIG_NOTE.
Completed items of that loop over time (sampled about every 10 s):

| seconds | completed | items/s since the previous sample | RssAnon of all workers (kB) |
|---|---|---|---|
$(grep -v '^#' "$RATE_DAT" | awk '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }')

![big loop](img/perf-bigloop.png)

$(if [ -n "${CLAIM_EXPLAIN:-}" ]; then
	echo "The workers' claim statement (src/claim.c), run by hand with EXPLAIN when $CLAIM_DONE items of the loop were done:"
	echo
	echo "$FENCE"
	echo "$CLAIM_EXPLAIN"
	echo "$FENCE"
fi)

Worker memory (the $(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker'") batchflow workers, from \`/proc/PID/status\`), before and after that loop:

| | before | after |
|---|---|---|
| VmRSS, all workers (kB) | $rss_b | $rss_a |
| RssAnon (private), all workers (kB) | $anon_b | $anon_a |
| largest VmRSS of one worker (kB) | $max_b | $max_a |

VmRSS includes the shared buffers a worker has touched, so it grows as the
workers touch more of \`shared_buffers\`; RssAnon is the private memory that
would reveal a leak.

## 8. Load: concurrent runs of 100 items of 50 ms at cap 3

All runs started by one statement (one commit). Item duration is
\`finished_at - started_at\` (claim to completion, including recording the
result) of each item; its floor is the 50 ms of work. Each item also logs its
own start and end (\`bench_work\`) and the overlap is computed per run from
that log.

| runs | items | wall (s) | items/s | max overlap per run (min..max over runs) | p50 / p95 / p99 item duration (ms) | run duration min–max (s) |
|---|---|---|---|---|---|---|
EOF
for k in $LOADS; do
	echo "| $k | $((k * 100)) | $(fig load${k}_wall_s) | $(fig load${k}_items_per_s %.0f) | $(med load${k}_min_overlap)..$(med load${k}_max_overlap) | $(med load${k}_p50_ms) / $(med load${k}_p95_ms) / $(med load${k}_p99_ms) | $(med load${k}_run_min_s)–$(med load${k}_run_max_s) |"
done
cat <<EOF

With $WORKERS workers, 10 runs at cap 3 (30 slots) and 50 runs (150 slots)
both ask for more slots than the pool has, so throughput is bounded by the
pool (ideal: $WORKERS workers x 20 items/s = $((WORKERS * 20)) items/s).

![load](img/perf-load.png)

## 9. Error recovery

100 items of 50 ms at cap 10; items with index divisible by 5 (20%) fail on
their first two attempts (division by zero), \`errorStrategy: retry\`,
\`maxRetries: 3\`, \`retryDelayMs: 100\` (backoff 100 ms then 200 ms).

| | time (s) |
|---|---|
| no failures | $(fig retry_ok_s %.3f) |
| 20% failing twice | $(fig retry_fail_s %.3f) |
| ratio | $(fig retry_ratio %.2f "x") |

All 100 items succeeded in both; 20 items needed 3 attempts.

## 10. Progress tracking on vs off

\`batchflow.track_progress\` (a reloadable setting) on vs off, 10,000 INSERT
items at cap 10:

| | time (s) |
|---|---|
| on | $(fig progress_on_s %.3f) |
| off | $(fig progress_off_s %.3f) |
| on / off | $(fig progress_on_vs_off %.3f "x") |

## Profile of tiny items

While $N_PROF INSERT items ran at cap 10 ($(fig profile_items_per_s %.0f) items/s with
pg_stat_statements tracking): wait events of the active batchflow
workers sampled from \`pg_stat_activity\` every ~5 ms (server-side loop):

| wait event | samples | share |
|---|---|---|
$WAITS

Top statements by total time (\`pg_stat_statements\`, \`track = all\`, so
the statements the workers run through SPI are included):

| calls | total ms | mean ms | statement |
|---|---|---|---|
$STMTS
EOF
if [ -n "$PERF" ]; then
	cat <<EOF

\`perf record -F 999 -g\` on the workers and the WAL writer for 3 s
($PERF_SAMPLES samples; top symbols by self time):

\`\`\`
$PERF
\`\`\`
EOF
fi
cat <<EOF

## Round 2 goals (issue 18)

\`bench/goals.sh --reps $REPS --goals "1 2 3 4"\` (its own cluster of 20
workers; HTTP through \`bench/http.sh\`), each figure measured in the
same repetition as its baseline:

$(grep -v '^\[' "$GOALS_OUT")

$(sed 's/^## /### /' "$GOALS_PROFILE" 2>/dev/null || true)

Goal 5, the breaking point, is \`bench/breaking.sh\` (tens of minutes, not
part of this run); what gave first is in [scaling.md](scaling.md). Its
last figures (docs/img/break-*.dat, columns as in each file's first line):
${BREAKING:-

(no data yet)}
EOF
if [ -f bench/analysis.md ]; then
	echo
	cat bench/analysis.md
fi
cat <<EOF

## Raw data

Every measurement of this run: [performance-raw.tsv](performance-raw.tsv)
(key, repetition, value).
EOF
} >"$OUT"
cp "$R" "$(dirname "$OUT")/performance-raw.tsv"
log "wrote $OUT, $IMG/perf-*.png in $((DUR / 60)) min $((DUR % 60)) s"
grep -v '^\[' "$GOALS_OUT"
exit 0
}
