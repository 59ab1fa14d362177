#!/bin/bash
# bench/soak_reload.sh - soak test for the shared-memory locks (a "PANIC:
# stuck spinlock" was once seen in the counter rebuild and never
# explained).  Not part of CI.
#
#   bash bench/soak_reload.sh [MINUTES]          (default 5)
#
# On a throwaway cluster with 10 workers, for MINUTES: loops of short SQL
# items keep the workers counting progress (every fifth item fails, with
# retries, so both outcomes and the retry path are counted), while
#   - every 0.3 s a reload flips batchflow.track_progress (off: items go
#     uncounted, on: the launcher rebuilds the counters) and sets
#     batchflow.batch_time to 0, 2 or 20 ms;
#   - every 20 s the server is shut down fast (SIGINT) and started again,
#     in the middle of items, counting and rebuilds.
# At the end it waits for every run and checks: no PANIC, no "stuck
# spinlock", no server crash (a process killed by a signal) in the log;
# every item that succeeded inserted its row exactly once; and, once the
# counters are trusted again, bf_progress's counts equal the items' own.
# Prints the counts and exits non-zero on any failure.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MINUTES=${1:-5}

trap bench_cluster_stop EXIT
bench_cluster_start 10 >/dev/null
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
log "cluster $BENCH_DIR port $BENCH_PORT, 10 workers, $MINUTES minutes"

bq <<'SQL' >/dev/null
CREATE TABLE soak_sink (run_id bigint, idx int, PRIMARY KEY (run_id, idx));
CREATE FUNCTION soak_item(run bigint, i int, attempt_fails boolean) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF attempt_fails AND i % 5 = 0 AND random() < 0.5 THEN
        RAISE EXCEPTION 'soak failure of item %', i;
    END IF;
    INSERT INTO soak_sink VALUES (run, i);
    RETURN i;
END $$;
SELECT bf_register('soak', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel",
  "concurrency": 8, "inputSource": {"variable": "items"}, "errorStrategy": "retry",
  "maxRetries": 3, "retryDelayMs": 10,
  "children": [{"id": "put", "type": "activity", "activity": "sql",
                "sql": "SELECT soak_item(($3 ->> ''run'')::bigint, $2, true)"}]}]}');
SQL

start_run() { bq -c "SELECT bf_start('soak', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(0, 1999) g)))"; }
end=$(( $(date +%s) + MINUTES * 60 ))
next_restart=$(( $(date +%s) + 20 ))
reloads=0 restarts=0 runs=0
flip=0
while [ "$(date +%s)" -lt "$end" ]; do
	# Keep about three runs open.
	open=$(bq -c "SELECT count(*) FROM batchflow.run WHERE finished_at IS NULL" 2>/dev/null || echo 9)
	if [ "$open" -lt 3 ]; then start_run >/dev/null 2>&1 && runs=$((runs + 1)) || true; fi
	flip=$((1 - flip))
	bt=$(( (RANDOM % 3 == 0) ? 0 : ((RANDOM % 2) ? 2 : 20) ))
	bq -c "ALTER SYSTEM SET batchflow.track_progress = $([ $flip = 1 ] && echo off || echo on)" >/dev/null 2>&1 &&
		bq -c "ALTER SYSTEM SET batchflow.batch_time = '${bt}ms'" >/dev/null 2>&1 &&
		bq -c "SELECT pg_reload_conf()" >/dev/null 2>&1 && reloads=$((reloads + 1)) || true
	sleep 0.3
	if [ "$(date +%s)" -ge "$next_restart" ]; then
		bash "$BENCH_ROOT/scripts/cluster.sh" stop "$BENCH_DIR"
		bash "$BENCH_ROOT/scripts/cluster.sh" start "$BENCH_DIR" "$BENCH_PORT" postgres >/dev/null
		restarts=$((restarts + 1))
		next_restart=$(( $(date +%s) + 20 ))
	fi
done
log "$runs runs started, $reloads reloads, $restarts fast restarts"

bq -c "ALTER SYSTEM SET batchflow.track_progress = on" >/dev/null
bq -c "ALTER SYSTEM RESET batchflow.batch_time" >/dev/null
bq -c "SELECT pg_reload_conf()" >/dev/null
for r in $(bq -c "SELECT id FROM batchflow.run WHERE finished_at IS NULL"); do
	bench_wait "$r" '10 minutes' || true
done
# The counters are trusted again once the launcher has rebuilt them.
for _ in $(seq 1 100); do
	[ "$(bq -c "SELECT batchflow._progress_exact()")" = f ] && break
	sleep 0.2
done

fail=0
check() {	# check DESCRIPTION ACTUAL EXPECTED
	if [ "$2" = "$3" ]; then echo "ok: $1 ($2)"; else echo "FAIL: $1: got '$2', expected '$3'"; fail=1; fi
}
log_file=$BENCH_DIR/server.log
check "PANIC lines in the server log" "$(grep -c 'PANIC' "$log_file" || true)" 0
check "stuck spinlock reports" "$(grep -c 'stuck spinlock' "$log_file" || true)" 0
check "processes terminated by a signal" "$(grep -c 'terminated by signal' "$log_file" || true)" 0
check "runs not finished" "$(bq -c "SELECT count(*) FROM batchflow.run WHERE finished_at IS NULL")" 0
check "succeeded items without their row, or rows without a succeeded item" \
	"$(bq -c "SELECT count(*) FROM batchflow.item i FULL JOIN soak_sink s ON s.run_id = i.run_id AND s.idx = i.idx
	            WHERE (i.status = 'succeeded') IS DISTINCT FROM (s.idx IS NOT NULL)")" 0
check "runs whose bf_progress counts differ from their items" \
	"$(bq -c "SELECT count(*) FROM batchflow.run r, LATERAL (SELECT sum(completed) AS c, sum(failed) AS f FROM bf_progress(r.id)) p
	            WHERE p.c <> (SELECT count(*) FROM batchflow.item i WHERE i.run_id = r.id AND i.status = 'succeeded')
	               OR p.f <> (SELECT count(*) FROM batchflow.item i WHERE i.run_id = r.id AND i.status = 'failed')")" 0
echo "items: $(bq -c "SELECT count(*) FILTER (WHERE status = 'succeeded') || ' succeeded, ' || count(*) FILTER (WHERE status = 'failed') || ' failed' FROM batchflow.item")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $fail
