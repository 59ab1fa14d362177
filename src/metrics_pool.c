/*-------------------------------------------------------------------------
 *
 * metrics_pool.c
 *	  The worker pool as the metrics see it: one row per worker slot, with
 *	  whether a worker runs in it, whether it is executing an item, and the
 *	  memory of its process.
 *
 *	  The memory is read from /proc/<pid>/status of the slot's worker, the
 *	  kernel's own accounting: VmRSS (resident memory, shared pages
 *	  included) and RssAnon (resident anonymous memory: the process's
 *	  private heap, what grows when a worker leaks or caches too much).
 *	  Only the pids of batchflow's own slots are read, never a pid passed
 *	  in by the caller, so the function reveals nothing about other
 *	  processes.  A worker that exits between reading its slot and reading
 *	  its file (or a system without /proc) gives NULL memory, not an error.
 *
 *	  Slots are read through bf_pool_read (pool.c owns them and their
 *	  locks); the files are read after, with no lock held.
 *
 * IDENTIFICATION
 *	  src/metrics_pool.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>

#include "fmgr.h"
#include "funcapi.h"
#include "storage/fd.h"
#include "utils/builtins.h"

#include "pool.h"

static bool bf_read_proc_memory(pid_t pid, int64 *rss, int64 *anon);

PG_FUNCTION_INFO_V1(bf_sql_worker_pool);

/*
 * Read VmRSS and RssAnon (bytes) of a process from /proc/<pid>/status;
 * false if the file cannot be read or lacks them.
 */
static bool
bf_read_proc_memory(pid_t pid, int64 *rss, int64 *anon)
{
	char		path[64];
	char		line[256];
	FILE	   *f;
	bool		got_rss = false;
	bool		got_anon = false;

	snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
	f = AllocateFile(path, "r");
	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		long long	kb;

		if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
		{
			*rss = (int64) kb * 1024;
			got_rss = true;
		}
		else if (sscanf(line, "RssAnon: %lld kB", &kb) == 1)
		{
			*anon = (int64) kb * 1024;
			got_anon = true;
		}
	}
	FreeFile(f);
	return got_rss && got_anon;
}

/*
 * batchflow.worker_pool() returns (slot, pid, busy, resident_bytes,
 * private_bytes): one row per slot of the pool (batchflow.max_workers of
 * them), pid and memory NULL while no worker runs in the slot.
 */
Datum
bf_sql_worker_pool(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (!bf_pool_exists())
		PG_RETURN_VOID();

	for (int i = 0; i < bf_pool_nslots(); i++)
	{
		BfWorkerView view;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		bool		running;
		int64		rss = 0;
		int64		anon = 0;

		running = bf_pool_read(i, &view);
		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum((int32) view.pid);
		nulls[1] = !running;
		values[2] = BoolGetDatum(running && (view.run_id != 0 || view.nactive > 0));
		if (running && bf_read_proc_memory(view.pid, &rss, &anon))
		{
			values[3] = Int64GetDatum(rss);
			values[4] = Int64GetDatum(anon);
		}
		else
			nulls[3] = nulls[4] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
