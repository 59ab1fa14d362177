#!/bin/bash
# bench/announce_delay.sh - how long after bf_start's commit a listener
# receives the run's first NOTIFY batchflow_progress payload.
#
#   bash bench/announce_delay.sh [N] [--load C]
#
# N bf_start calls (default 200), one at a time, 20 ms apart, each in its
# own transaction; a second session LISTENs.  The delay is measured from
# the moment the bf_start call returned (its commit done) to the moment
# the listener's socket delivered the payload {"run": id, "kind": "run",
# "status": "running", ...}; negative when the notification arrived
# before the starting session got its answer (PostgreSQL signals the
# listeners during the commit).  With --load C, pgbench -c C calls
# bf_start meanwhile (5-item runs the workers execute).  Prints p50, p90
# and the maximum in ms.  Talks libpq through Python's ctypes (no driver
# to install).
set -euo pipefail
{
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BENCH_ROOT"
N=200
LOAD=0
while [ $# -gt 0 ]; do
	case $1 in
	--load) LOAD=$2; shift ;;
	[0-9]*) N=$1 ;;
	*) echo "usage: bench/announce_delay.sh [N] [--load C]" >&2; exit 2 ;;
	esac
	shift
done
trap bench_cluster_stop EXIT
bench_cluster_start 10 >/dev/null
bq -c "SELECT bf_register('delay_one', '{\"nodes\": [{\"id\": \"x\", \"type\": \"activity\", \"activity\": \"sql\", \"sql\": \"SELECT 1\"}]}')" >/dev/null
bq -c "SELECT bf_register('delay_five', '{\"nodes\": [{\"id\": \"each\", \"type\": \"loop\", \"loopType\": \"parallel\", \"concurrency\": 5, \"inputSource\": {\"variable\": \"items\"}, \"children\": [{\"id\": \"x\", \"type\": \"activity\", \"activity\": \"sql\", \"sql\": \"SELECT 1\"}]}]}')" >/dev/null
bench_pid=
if [ "$LOAD" -gt 0 ]; then
	echo "SELECT bf_start('delay_five', '{\"items\": [1, 2, 3, 4, 5]}');" >"$BENCH_WORK/load.sql"
	pgbench -n -c "$LOAD" -j 2 -T 600 -f "$BENCH_WORK/load.sql" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres postgres >/dev/null 2>&1 &
	bench_pid=$!
	sleep 1
fi
python3 - "host=$BENCH_DIR port=$BENCH_PORT user=postgres dbname=postgres" "$N" <<'PY'
import ctypes, json, select, sys, time

pq = ctypes.CDLL("libpq.so.5")
pq.PQconnectdb.restype = ctypes.c_void_p
pq.PQconnectdb.argtypes = [ctypes.c_char_p]
pq.PQstatus.argtypes = [ctypes.c_void_p]
pq.PQexec.restype = ctypes.c_void_p
pq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
pq.PQresultStatus.argtypes = [ctypes.c_void_p]
pq.PQgetvalue.restype = ctypes.c_char_p
pq.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
pq.PQclear.argtypes = [ctypes.c_void_p]
pq.PQsocket.argtypes = [ctypes.c_void_p]
pq.PQconsumeInput.argtypes = [ctypes.c_void_p]
pq.PQerrorMessage.restype = ctypes.c_char_p
pq.PQerrorMessage.argtypes = [ctypes.c_void_p]

class PGnotify(ctypes.Structure):
    _fields_ = [("relname", ctypes.c_char_p), ("be_pid", ctypes.c_int),
                ("extra", ctypes.c_char_p), ("next", ctypes.c_void_p)]

pq.PQnotifies.restype = ctypes.POINTER(PGnotify)
pq.PQnotifies.argtypes = [ctypes.c_void_p]
pq.PQfreemem.argtypes = [ctypes.c_void_p]

def connect(cs):
    c = pq.PQconnectdb(cs.encode())
    if pq.PQstatus(c) != 0:
        sys.exit("connect: " + pq.PQerrorMessage(c).decode())
    return c

def run(c, sql):
    r = pq.PQexec(c, sql.encode())
    if pq.PQresultStatus(r) not in (1, 2):
        sys.exit("query failed: " + pq.PQerrorMessage(c).decode())
    v = pq.PQgetvalue(r, 0, 0) if pq.PQresultStatus(r) == 2 else None
    pq.PQclear(r)
    return v

cs, n = sys.argv[1], int(sys.argv[2])
listener, starter = connect(cs), connect(cs)
run(listener, "LISTEN batchflow_progress")
sock = pq.PQsocket(listener)
seen = {}            # run id -> arrival time of its first 'running' payload

def drain(timeout):
    if select.select([sock], [], [], timeout)[0]:
        t = time.perf_counter()
        pq.PQconsumeInput(listener)
        while True:
            p = pq.PQnotifies(listener)
            if not p:
                break
            d = json.loads(p.contents.extra.decode())
            if d.get("kind") == "run" and d.get("status") == "running":
                seen.setdefault(int(d["run"]), t)
            pq.PQfreemem(p)
        return True
    return False

delays = []
for i in range(n):
    run_id = int(run(starter, "SELECT bf_start('delay_one')"))
    t0 = time.perf_counter()
    deadline = t0 + 5
    while run_id not in seen and time.perf_counter() < deadline:
        drain(0.05)
    if run_id not in seen:
        sys.exit(f"run {run_id}: no notification within 5 s")
    delays.append((seen[run_id] - t0) * 1000)
    time.sleep(0.02)
    while drain(0):
        pass
delays.sort()
pct = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]
print(f"announcement delay after commit, {n} bf_start: p50 {pct(0.5):.3f} ms, p90 {pct(0.9):.3f} ms, max {delays[-1]:.3f} ms")
PY
[ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null && wait "$bench_pid" 2>/dev/null || true
announcers=$(bq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow announcer'")
echo "announcer processes at the end: $announcers; load average $(cut -d' ' -f1-3 /proc/loadavg)"
}
