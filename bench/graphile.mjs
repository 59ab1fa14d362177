// bench/graphile.mjs - the peer comparison: graphile-worker on the same
// cluster and the same work as batchflow's scenarios.
//
// bench/run.sh installs graphile-worker (npm) into a temporary directory,
// copies this file there and runs it:
//   node graphile.mjs CONNSTRING noop N CONCURRENCY
//       N jobs whose task does nothing, one worker with CONCURRENCY
//   node graphile.mjs CONNSTRING batches NBATCH PER CAP SLEEP_MS CONCURRENCY
//       NBATCH batches of PER jobs of SLEEP_MS of SQL work (pg_sleep); a
//       per-batch cap is emulated the only way graphile-worker allows: CAP
//       named (serial) queues per batch, jobs spread over them round-robin
//   node graphile.mjs CONNSTRING latency RUNS
//       RUNS times: add one job, time from the add's commit timestamp
//       (needs track_commit_timestamp) to its start
//   node graphile.mjs CONNSTRING serve SECONDS CONCURRENCY
//       run a worker for SECONDS (jobs of task 'noop' are added by someone
//       else, e.g. pgbench calling graphile_worker.add_job) and print how
//       many jobs it completed; prints {"ready": true} on stderr once up
// Time runs from just before the jobs are added (one statement, one commit)
// to the last job's success.  Prints one JSON line.  Its logging is off (a
// line per job would slow it down).  With GW_TUNED=1 the worker also uses
// its batching options (localQueue of 500 jobs, completions batched),
// the fastest configuration graphile-worker documents.
import { run, Logger } from "graphile-worker";
import pg from "pg";

const [conn, mode, ...rest] = process.argv.slice(2);
const args = rest.map(Number);
const pool = new pg.Pool({ connectionString: conn, max: 4 });
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

function maxOverlap(spans) {
  const ev = [];
  for (const [s, e] of spans) ev.push([s, 1], [e, -1]);
  ev.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let n = 0, m = 0;
  for (const [, d] of ev) { n += d; m = Math.max(m, n); }
  return m;
}

async function main() {
  let expected = 0, done = 0, failed = 0, tLast = 0, resolveAll;
  const allDone = new Promise((r) => (resolveAll = r));
  const spans = {}; // batch -> [[start, end]]
  const starts = [];
  const startsWall = []; // ms since the epoch, the clock the server's timestamps use
  const taskList = {
    noop: async () => {},
    sleep: async (payload, helpers) => {
      const s = now();
      await helpers.query("SELECT pg_sleep($1)", [payload.ms / 1000]);
      (spans[payload.batch] ||= []).push([s, now()]);
    },
    mark: async () => { starts.push(now()); startsWall.push(performance.timeOrigin + performance.now()); },
  };
  const concurrency = mode === "noop" || mode === "serve" ? args[1] : mode === "batches" ? args[4] : 1;
  const tuned = process.env.GW_TUNED === "1";
  const runner = await run({
    connectionString: conn,
    concurrency,
    noHandleSignals: true,
    pollInterval: 2000,
    taskList,
    logger: new Logger(() => () => {}),
    ...(tuned ? { preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0 } } } : {}),
  });
  runner.events.on("job:success", () => {
    done++; tLast = now();
    if (done + failed >= expected && expected > 0) resolveAll();
  });
  runner.events.on("job:error", () => { failed++; });
  const result = { mode, args, concurrency, tuned };

  if (mode === "noop") {
    const n = args[0];
    expected = n;
    const t0 = now();
    await pool.query(
      "SELECT graphile_worker.add_job('noop', json_build_object('i', g)) FROM generate_series(1, $1) g", [n]);
    await allDone;
    result.seconds = (tLast - t0) / 1000;
    result.jobs_per_sec = n / result.seconds;
  } else if (mode === "batches") {
    const [nb, per, cap, ms] = args;
    expected = nb * per;
    const t0 = now();
    await pool.query(
      `SELECT graphile_worker.add_job('sleep', json_build_object('batch', b, 'ms', $3::int),
                                      queue_name := format('b%s_%s', b, i % $4))
         FROM generate_series(1, $1) b, generate_series(0, $2 - 1) i ORDER BY i, b`,
      [nb, per, ms, cap]);
    await allDone;
    result.seconds = (tLast - t0) / 1000;
    result.ideal_seconds = (per / cap) * ms / 1000;
    result.max_overlap_per_batch = Object.values(spans).map(maxOverlap);
  } else if (mode === "serve") {
    const t0 = now();
    console.error(JSON.stringify({ ready: true }));
    await new Promise((r) => setTimeout(r, args[0] * 1000));
    result.seconds = (now() - t0) / 1000;
    result.completed = done;
    result.jobs_per_sec = done / result.seconds;
  } else if (mode === "latency") {
    // Each job is added together with a marker row in one transaction;
    // with track_commit_timestamp on, the marker's commit timestamp is
    // the add's commit (the start of batchflow's own latency figure).
    await pool.query("CREATE TABLE IF NOT EXISTS bench_gw_mark (n int)");
    await pool.query("TRUNCATE bench_gw_mark");
    const lat = [];
    for (let i = 0; i < args[0]; i++) {
      expected = done + 1;
      const p = new Promise((r) => (resolveAll = r));
      const before = starts.length;
      await pool.query(
        "WITH j AS (SELECT graphile_worker.add_job('mark', '{}'::json)) INSERT INTO bench_gw_mark SELECT $1 FROM j",
        [i]);
      const tc = now();
      await p;
      lat.push(starts[before] - tc);
      await new Promise((r) => setTimeout(r, 20)); // an idle worker, as for batchflow
    }
    const { rows } = await pool.query(
      "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000 AS ms FROM bench_gw_mark ORDER BY n");
    const fromCommit = rows.map((r, i) => startsWall[i] - Number(r.ms)).sort((a, b) => a - b);
    lat.sort((a, b) => a - b);
    result.median_ms = fromCommit[Math.floor(fromCommit.length / 2)];
    result.median_from_return_ms = lat[Math.floor(lat.length / 2)];
    result.note = "median_ms: from the add_job transaction's commit timestamp to the task's start (as batchflow's figure); median_from_return_ms: from the statement's return";
  }
  result.failed = failed;
  await runner.stop();
  await pool.end();
  console.log(JSON.stringify(result));
}

main().catch((e) => { console.error(e); process.exit(1); });
