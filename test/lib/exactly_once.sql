\set ECHO none
-- test/lib/exactly_once.sql - the exactly-once oracle.
--
-- Counting effect rows proves that each item took effect once only if
-- nothing went wrong between a child's effects and the item's completion;
-- a worker that committed the effects in one transaction and recorded
-- completion in a second would still leave one row per item unless a crash
-- lands between the two.  The oracle checks the cause instead: every
-- effect row must have been written in the very transaction that recorded
-- its item's completion.
--
-- Convention: the SQL child writes one row per execution into an effect
-- table with columns run bigint, idx int and xid xid8, where xid is the
-- top-level transaction it ran in, pg_current_xact_id() (a column
-- DEFAULT pg_current_xact_id() does it), run is ($3->>'run')::bigint and
-- idx is $2.  The item's completion is the last write of its row in
-- batchflow.item, so the row's xmin is that transaction.
--
--   SELECT * FROM pg_temp.bf_exactly_once(run, 'node id', 'effect_table');
--
-- returns items | succeeded | effects | once | in_completion_txn: a loop
-- whose items all succeeded exactly once shows the same number five times.
-- Used by the regression tests (\ir test/lib/exactly_once.sql, from the
-- repository root, as scripts/test.sh runs them) and by the Perl TAP
-- tests (BatchflowCrash::oracle_exactly_once).  pg_temp: nothing to clean
-- up, nothing shared between tests.
CREATE OR REPLACE FUNCTION pg_temp.bf_exactly_once(p_run bigint, p_node text, p_effects regclass)
RETURNS TABLE (items bigint, succeeded bigint, effects bigint, once bigint, in_completion_txn bigint)
LANGUAGE plpgsql AS $oracle$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH it AS (
            SELECT i.idx, i.status, i.xmin AS done_xid
              FROM batchflow.item i JOIN batchflow.loop l ON l.id = i.loop_ref
             WHERE l.run_id = $1 AND l.node_id = $2),
        ef AS (SELECT e.idx, e.xid FROM %s e WHERE e.run = $1),
        per_item AS (
            SELECT it.idx, it.status, count(ef.idx) AS n,
                   count(*) FILTER (WHERE ef.xid::xid = it.done_xid) AS same_txn
              FROM it LEFT JOIN ef ON ef.idx = it.idx
             GROUP BY it.idx, it.status)
        SELECT (SELECT count(*) FROM it),
               (SELECT count(*) FROM it WHERE status = 'succeeded'),
               (SELECT count(*) FROM ef),
               (SELECT count(*) FROM per_item WHERE status = 'succeeded' AND n = 1),
               (SELECT coalesce(sum(same_txn), 0)::bigint FROM per_item WHERE status = 'succeeded')$q$,
        p_effects)
    USING p_run, p_node;
END;
$oracle$;
\set ECHO all
