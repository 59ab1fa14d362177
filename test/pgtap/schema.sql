-- pgTAP: batchflow's schema, as SPEC promises it.
--
-- Run with pg_prove against a database where batchflow is installed:
--   pg_prove -h HOST -p PORT -U postgres -d DB test/pgtap/schema.sql
--
-- Everything happens in one transaction that is rolled back, pgTAP itself
-- included (when it was not installed before): the run created to exercise
-- the CHECK constraints is never committed, so no worker ever sees it.
--
--   - the schema, and exactly its tables and views;
--   - every bf_* function of SPEC: callable unqualified with the default
--     search_path, its argument and return types, parameter names and
--     defaults, and the columns of the set-returning ones;
--   - the columns SPEC lists for batchflow.runs and batchflow.items;
--   - a COMMENT on every table, view and column;
--   - the CHECK constraints on statuses reject bad values (SQLSTATE 23514);
--   - the partial index the claim query uses.

\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

-- PostgreSQL's default search_path: SPEC says bf_* just work with it.
SET LOCAL search_path = "$user", public;

SELECT plan(64);

-- The schema, its tables and views ---------------------------------------------

SELECT has_schema('batchflow');

SELECT tables_are('batchflow', ARRAY[
    'workflow', 'workflow_version', 'run', 'loop', 'item', 'item_error',
    'loop_progress', 'progress_counter', 'pruned_run', 'item_dep', 'item_wait', 'item_ready', 'loop_fill',
    'metric_counter', 'metric_loop', 'metric_run_counter']);
SELECT has_table('batchflow', 'workflow', 'table batchflow.workflow exists');
SELECT has_table('batchflow', 'workflow_version', 'table batchflow.workflow_version exists');
SELECT has_table('batchflow', 'run', 'table batchflow.run exists');
SELECT has_table('batchflow', 'loop', 'table batchflow.loop exists');
SELECT has_table('batchflow', 'item', 'table batchflow.item exists');
SELECT has_table('batchflow', 'item_error', 'table batchflow.item_error exists');
SELECT has_table('batchflow', 'loop_progress', 'table batchflow.loop_progress exists');
SELECT has_table('batchflow', 'progress_counter', 'table batchflow.progress_counter exists');
SELECT has_table('batchflow', 'pruned_run', 'table batchflow.pruned_run exists');
SELECT has_table('batchflow', 'item_dep', 'table batchflow.item_dep exists');
SELECT has_table('batchflow', 'item_wait', 'table batchflow.item_wait exists');
SELECT has_table('batchflow', 'item_ready', 'table batchflow.item_ready exists');

SELECT views_are('batchflow', ARRAY[
    'runs', 'items', 'progress', 'dashboard', 'loop_stats', 'stuck_runs', '_progress_all',
    'workflows']);
SELECT has_view('batchflow', 'runs', 'view batchflow.runs exists');
SELECT has_view('batchflow', 'items', 'view batchflow.items exists');
SELECT has_view('batchflow', 'progress', 'view batchflow.progress exists');
SELECT has_view('batchflow', 'dashboard', 'view batchflow.dashboard exists');
SELECT has_view('batchflow', 'loop_stats', 'view batchflow.loop_stats exists');
SELECT has_view('batchflow', 'stuck_runs', 'view batchflow.stuck_runs exists');
SELECT has_view('batchflow', '_progress_all', 'view batchflow._progress_all exists');
SELECT has_view('batchflow', 'workflows', 'view batchflow.workflows exists');

-- The SQL API of SPEC, unqualified: visible through the default search_path ---

SELECT has_function('bf_register', ARRAY['text', 'jsonb']);
SELECT function_returns('bf_register', ARRAY['text', 'jsonb'], 'integer');
SELECT has_function('bf_start', ARRAY['text', 'jsonb']);
SELECT function_returns('bf_start', ARRAY['text', 'jsonb'], 'bigint');
SELECT has_function('bf_wait', ARRAY['bigint', 'interval']);
SELECT function_returns('bf_wait', ARRAY['bigint', 'interval'], 'text');
SELECT has_function('bf_cancel', ARRAY['bigint', 'boolean']);
SELECT function_returns('bf_cancel', ARRAY['bigint', 'boolean'], 'boolean');
SELECT hasnt_function('bf_cancel', ARRAY['bigint'], 'the one-argument bf_cancel of 0.1.0 is gone');
SELECT has_function('bf_pause', ARRAY['bigint']);
SELECT function_returns('bf_pause', ARRAY['bigint'], 'boolean');
SELECT has_function('bf_resume', ARRAY['bigint']);
SELECT function_returns('bf_resume', ARRAY['bigint'], 'boolean');
SELECT has_function('bf_purge', ARRAY['interval']);
SELECT function_returns('bf_purge', ARRAY['interval'], 'bigint');
SELECT has_function('bf_unregister', ARRAY['text']);
SELECT function_returns('bf_unregister', ARRAY['text'], 'boolean');
SELECT has_function('bf_retry', ARRAY['bigint']);
SELECT function_returns('bf_retry', ARRAY['bigint'], 'bigint');
SELECT has_function('bf_progress', ARRAY['bigint']);
SELECT function_returns('bf_progress', ARRAY['bigint'], 'setof record');
SELECT has_function('bf_report', ARRAY['bigint']);
SELECT function_returns('bf_report', ARRAY['bigint'], 'setof record');

SELECT is(
    (SELECT string_agg(format('%s(%s) RETURNS %s', p.proname, pg_get_function_arguments(p.oid),
                              pg_get_function_result(p.oid)), E'\n' ORDER BY p.proname)
       FROM pg_proc p
      WHERE p.proname IN ('bf_register', 'bf_start', 'bf_wait', 'bf_cancel', 'bf_retry',
                          'bf_progress', 'bf_report', 'bf_pause', 'bf_resume', 'bf_purge',
                          'bf_unregister')
        AND pg_function_is_visible(p.oid)),
    concat_ws(E'\n',
        'bf_cancel(run bigint, force boolean DEFAULT false) RETURNS boolean',
        'bf_pause(run bigint) RETURNS boolean',
        'bf_progress(run bigint) RETURNS TABLE(loop_id text, status text, total bigint, completed bigint, failed bigint, active integer, percent numeric, items_per_sec numeric, elapsed interval, eta interval, blocked bigint)',
        'bf_purge(older_than interval) RETURNS bigint',
        'bf_register(name text, definition jsonb) RETURNS integer',
        'bf_report(run bigint) RETURNS TABLE(loop_id text, idx integer, item jsonb, attempts integer, error text)',
        'bf_resume(run bigint) RETURNS boolean',
        'bf_retry(run bigint) RETURNS bigint',
        'bf_start(workflow text, input jsonb DEFAULT ''{}''::jsonb) RETURNS bigint',
        'bf_unregister(workflow text) RETURNS boolean',
        'bf_wait(run bigint, timeout interval DEFAULT ''00:10:00''::interval) RETURNS text'),
    'the bf_* functions have the parameter names, defaults and result columns of SPEC');

-- The views have the columns SPEC lists (they may have more).

SELECT is(ARRAY(SELECT c FROM unnest(ARRAY['id', 'workflow', 'version', 'status', 'input',
                                           'started_at', 'finished_at', 'error']) c
                EXCEPT
                SELECT attname::text FROM pg_attribute
                 WHERE attrelid = 'batchflow.runs'::regclass AND attnum > 0),
          '{}'::text[],
          'batchflow.runs has every column of SPEC');
SELECT is(ARRAY(SELECT c FROM unnest(ARRAY['run_id', 'loop_id', 'idx', 'item', 'status',
                                           'attempts', 'started_at', 'finished_at', 'duration',
                                           'output', 'error']) c
                EXCEPT
                SELECT attname::text FROM pg_attribute
                 WHERE attrelid = 'batchflow.items'::regclass AND attnum > 0),
          '{}'::text[],
          'batchflow.items has every column of SPEC');

-- Comments ----------------------------------------------------------------------

SELECT is(ARRAY(SELECT c.relname || coalesce('.' || a.attname, '')
                  FROM pg_class c
                  LEFT JOIN pg_attribute a
                         ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 WHERE c.relnamespace = 'batchflow'::regnamespace
                   AND c.relkind IN ('r', 'p', 'v', 'm')
                   AND CASE WHEN a.attname IS NULL THEN obj_description(c.oid, 'pg_class')
                            ELSE col_description(c.oid, a.attnum) END IS NULL
                UNION ALL
                -- a table or view with no column is not missed by the join above
                SELECT c.relname FROM pg_class c
                 WHERE c.relnamespace = 'batchflow'::regnamespace
                   AND c.relkind IN ('r', 'p', 'v', 'm')
                   AND obj_description(c.oid, 'pg_class') IS NULL
                   AND EXISTS (SELECT 1 FROM pg_attribute a
                                WHERE a.attrelid = c.oid AND a.attnum > 0)
                ORDER BY 1),
          '{}'::text[],
          'every table, view and column in schema batchflow has a comment');

-- The CHECK constraints on statuses ------------------------------------------------

-- A run to poke at: one loop of two items.  It is rolled back with the rest.
SELECT ok(bf_register('pgtap_schema_check', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"static": ["a", "b"]},
   "children": [{"id": "echo", "type": "activity", "activity": "sql", "sql": "SELECT $1"}]}]}') > 0,
          'bf_register is callable unqualified');
SELECT bf_start('pgtap_schema_check') AS run \gset
SELECT id AS loop FROM batchflow.loop WHERE run_id = :run \gset
SELECT is((SELECT count(*) FROM batchflow.item WHERE loop_ref = :loop AND status = 'pending'),
          2::bigint,
          'bf_start is callable unqualified and queues the loop''s items');

SELECT throws_ok(format($$UPDATE batchflow.run SET status = 'done', finished_at = now() WHERE id = %s$$, :run),
                 '23514', 'new row for relation "run" violates check constraint "run_status_check"',
                 'batchflow.run.status rejects a value that is not a run status');
SELECT throws_ok(format($$UPDATE batchflow.run SET status = 'succeeded' WHERE id = %s$$, :run),
                 '23514', 'new row for relation "run" violates check constraint "run_check"',
                 'a run cannot be succeeded without finished_at');
SELECT lives_ok(format($$UPDATE batchflow.run SET status = 'pending' WHERE id = %s$$, :run),
                'batchflow.run.status accepts pending');

SELECT throws_ok(format($$UPDATE batchflow.loop SET status = 'pending' WHERE id = %s$$, :loop),
                 '23514', 'new row for relation "loop" violates check constraint "loop_status_check"',
                 'batchflow.loop.status rejects a value that is not a loop status');
SELECT throws_ok(format($$UPDATE batchflow.loop SET error_strategy = 'ignore' WHERE id = %s$$, :loop),
                 '23514', 'new row for relation "loop" violates check constraint "loop_error_strategy_check"',
                 'batchflow.loop.error_strategy rejects an unknown strategy');
SELECT throws_ok(format($$UPDATE batchflow.loop SET concurrency = 0 WHERE id = %s$$, :loop),
                 '23514', 'new row for relation "loop" violates check constraint "loop_concurrency_check"',
                 'batchflow.loop.concurrency rejects 0');

SELECT throws_ok(format($$UPDATE batchflow.item SET status = 'done' WHERE loop_ref = %s AND idx = 0$$, :loop),
                 '23514', 'new row for relation "item" violates check constraint "item_status_check"',
                 'batchflow.item.status rejects a value that is not an item status');
SELECT throws_ok(format($$UPDATE batchflow.item SET status = 'skipped' WHERE loop_ref = %s AND idx = 0$$, :loop),
                 '23514', 'new row for relation "item" violates check constraint "item_check"',
                 'an item cannot end without finished_at');
SELECT lives_ok(format($$UPDATE batchflow.item SET status = 'skipped', finished_at = now()
                          WHERE loop_ref = %s AND idx = 0$$, :loop),
                'batchflow.item.status accepts skipped with finished_at');

SELECT throws_ok(format($$UPDATE batchflow.loop_progress SET state = 'done' WHERE loop_ref = %s$$, :loop),
                 '23514', 'new row for relation "loop_progress" violates check constraint "loop_progress_state_check"',
                 'batchflow.loop_progress.state rejects an unknown state');

-- The claim index ------------------------------------------------------------------

SELECT has_index('batchflow', 'item', 'item_claim_idx', ARRAY['loop_ref', 'idx'],
                 'the claim index item_claim_idx is on batchflow.item (loop_ref, idx)');
SELECT is((SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i
            WHERE i.indexrelid = 'batchflow.item_claim_idx'::regclass),
          '(status = ANY (ARRAY[''pending''::text, ''running''::text]))',
          'item_claim_idx holds only pending and running items');

SELECT * FROM finish();
ROLLBACK;
