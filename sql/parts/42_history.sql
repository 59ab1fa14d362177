/*
 * batchflow install script, part 42: the launcher's work on progress and
 * history: rebuilding the counters, pruning the items of old runs.
 */

-- The launcher's work ----------------------------------------------------------

/*
 * Rebuild progress counters from batchflow.item: of every open loop (all)
 * or of the loops marked 'recount'.  Called by the launcher while it holds
 * the reconcile lock; returns the loops rebuilt.
 */
CREATE FUNCTION batchflow._rebuild_counters(p_all boolean) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_loops bigint[];
BEGIN
    SELECT coalesce(array_agg(p.loop_ref), '{}') INTO v_loops
      FROM batchflow.loop_progress p
      JOIN batchflow.loop l ON l.id = p.loop_ref
     WHERE CASE WHEN p_all THEN l.finished_at IS NULL AND p.state <> 'final'
                ELSE p.state = 'recount' END;

    DELETE FROM batchflow.progress_counter WHERE loop_ref = ANY (v_loops);
    UPDATE batchflow.loop_progress p
       SET state = CASE WHEN l.finished_at IS NULL THEN 'live' ELSE 'final' END,
           completed = (c.counts).completed, failed = (c.counts).failed,
           skipped = (c.counts).skipped, updated_at = clock_timestamp()
      FROM batchflow.loop l,
           LATERAL (SELECT batchflow._item_counts(l.id) AS counts OFFSET 0) c
     WHERE p.loop_ref = ANY (v_loops) AND l.id = p.loop_ref;
    RETURN QUERY SELECT unnest(v_loops);
END;
$$;
COMMENT ON FUNCTION batchflow._rebuild_counters(boolean) IS 'Internal: reset progress counters to the exact counts from batchflow.item';

/*
 * Delete a batch of the items (item errors first) of the run that finished
 * longest ago, if that is more than p_retention ago; record the run in
 * pruned_run once it has no item left.  Returns the number of rows deleted
 * (0: nothing to prune now).
 *
 * Runs are pruned strictly in finished_at order, so that only the runs
 * finished after the last one pruned need looking at.  A run's finished_at
 * is the clock of its closing transaction, which may commit much later; so
 * no run is pruned that finished after the start of a transaction still
 * open in this database: until that transaction ends, the watermark (the
 * last pruned run's finished_at) stays below every run it may yet close,
 * however long it stays open (it was "less an hour" before, and a run
 * whose closing transaction took longer was never pruned).  When the oldest
 * candidate is locked (bf_retry is re-opening it), nothing is pruned until
 * the next sweep rather than skipping past it for good.
 */
CREATE FUNCTION batchflow._prune_history(p_retention interval, p_batch int) RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run      bigint;
    v_finished timestamptz;
    v_errors   int;
    v_items    int;
BEGIN
    SELECT r.id, r.finished_at INTO v_run, v_finished
      FROM batchflow.run r
     WHERE r.finished_at < clock_timestamp() - p_retention
       AND r.finished_at >= coalesce((SELECT p.finished_at FROM batchflow.pruned_run p
                                       WHERE p.pruned_at IS NOT NULL
                                       ORDER BY p.finished_at DESC LIMIT 1),
                                     '-infinity')
       -- Not past the start of any open transaction of this database: one
       -- of them may still close a run, whose finished_at (its clock, not
       -- its commit) is after its start.  So the watermark above never
       -- passes a run that is not visible yet.
       AND r.finished_at < (SELECT min(a.xact_start) FROM pg_catalog.pg_stat_activity a
                             WHERE a.datid = (SELECT d.oid FROM pg_catalog.pg_database d
                                               WHERE d.datname = pg_catalog.current_database())
                               AND a.backend_type <> 'autovacuum worker')
       AND NOT EXISTS (SELECT 1 FROM batchflow.pruned_run p
                        WHERE p.run_id = r.id AND p.pruned_at IS NOT NULL)
     ORDER BY r.finished_at
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Keep bf_retry out while pruning; if it holds the run, try again later.
    PERFORM 1 FROM batchflow.run r
      WHERE r.id = v_run AND r.finished_at IS NOT NULL
        FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;

    -- Before the first deletion: keep what bf_summary reads of the errors.
    IF NOT EXISTS (SELECT 1 FROM batchflow.pruned_run p WHERE p.run_id = v_run) THEN
        UPDATE batchflow.loop_progress lp
           SET failed_attempts = e.n, last_error = e.last_error
          FROM (SELECT e.loop_ref, count(*) AS n,
                       (array_agg(e.error ORDER BY e.id DESC))[1] AS last_error
                  FROM batchflow.item_error e WHERE e.run_id = v_run
                 GROUP BY e.loop_ref) e
         WHERE lp.loop_ref = e.loop_ref;
    END IF;

    DELETE FROM batchflow.item_error
     WHERE id IN (SELECT id FROM batchflow.item_error WHERE run_id = v_run LIMIT p_batch);
    GET DIAGNOSTICS v_errors = ROW_COUNT;

    DELETE FROM batchflow.item i
     USING (SELECT loop_ref, idx FROM batchflow.item
             WHERE run_id = v_run LIMIT greatest(p_batch - v_errors, 0)) s
     WHERE i.loop_ref = s.loop_ref AND i.idx = s.idx;
    GET DIAGNOSTICS v_items = ROW_COUNT;

    IF v_errors + v_items < p_batch THEN
        -- Nothing left: the run's history is pruned.
        DELETE FROM batchflow.progress_counter c
         USING batchflow.loop l WHERE l.run_id = v_run AND c.loop_ref = l.id;
        INSERT INTO batchflow.pruned_run (run_id, finished_at, items, pruned_at)
        VALUES (v_run, v_finished, v_errors + v_items, clock_timestamp())
        ON CONFLICT (run_id) DO UPDATE
            SET items = batchflow.pruned_run.items + excluded.items,
                finished_at = excluded.finished_at, pruned_at = excluded.pruned_at;
        RETURN v_errors + v_items + 1;
    END IF;
    -- More to come: count what went so far.
    INSERT INTO batchflow.pruned_run (run_id, finished_at, items)
    VALUES (v_run, v_finished, v_errors + v_items)
    ON CONFLICT (run_id) DO UPDATE SET items = batchflow.pruned_run.items + excluded.items;
    RETURN v_errors + v_items;
END;
$$;
COMMENT ON FUNCTION batchflow._prune_history(interval, int) IS 'Internal: delete a batch of the items of the oldest finished run past the retention';
