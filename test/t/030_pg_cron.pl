# Scheduling runs with pg_cron, preloaded beside batchflow.
#
# A cluster with shared_preload_libraries = 'batchflow,pg_cron' schedules
# SELECT bf_start('cron_tick') every minute.  pg_cron 1.4 has minute
# granularity: the first run starts at the next minute boundary, so the
# test polls for up to a few minutes.  The run started by pg_cron must
# succeed with one item per generated row, pg_cron must record the job as
# succeeded, and cron.unschedule must remove the job.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $items = 24;
my $node  = PostgreSQL::Test::Cluster->new('pg_cron');
$node->init;
# pg_cron runs jobs in background workers here, so it needs no connection
# settings (by default it connects to localhost over TCP, which test
# clusters do not listen on).
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'batchflow,pg_cron'
max_worker_processes = 32
batchflow.database_name = 'postgres'
cron.database_name = 'postgres'
cron.use_background_workers = on
cron.max_running_jobs = 4
});
$node->start;

$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION batchflow;
CREATE EXTENSION pg_cron;
CREATE TABLE cron_sink (run bigint NOT NULL, hour int NOT NULL, label text NOT NULL,
                        PRIMARY KEY (run, hour));
SELECT bf_register('cron_tick', '{"nodes": [
  {"id": "hours", "type": "activity", "activity": "sql",
   "sql": "SELECT jsonb_agg(h) FROM generate_series(0, $items - 1) h", "output": "hours"},
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "hours"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO cron_sink VALUES ((\$3 ->> ''run'')::bigint, (\$1)::int, lpad((\$1)::text, 2, ''0'') || '':00'') RETURNING hour"}]}]}');
});

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_extension WHERE extname IN ('batchflow', 'pg_cron')}),
	'2',
	'batchflow and pg_cron are installed side by side');

my $jobid = $node->safe_psql('postgres',
	q{SELECT cron.schedule('bf', '* * * * *', $$SELECT bf_start('cron_tick')$$)});
like($jobid, qr/^\d+$/, "cron.schedule returns job id $jobid");

# The first tick is at the next minute boundary: up to 60 s, plus the run.
ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) >= 1 FROM batchflow.runs WHERE workflow = 'cron_tick' AND finished_at IS NOT NULL}),
	'pg_cron starts a run of the workflow, and it finishes');

my $run = $node->safe_psql('postgres',
	q{SELECT min(id) FROM batchflow.runs WHERE workflow = 'cron_tick'});
is($node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')"),
	'succeeded', "the scheduled run $run succeeds");
is( $node->safe_psql(
		'postgres', qq{SELECT owner, error IS NULL FROM batchflow.runs WHERE id = $run}),
	'postgres|t',
	'the run belongs to the role of the cron job');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*), count(*) FILTER (WHERE status = 'succeeded')
  FROM batchflow.items WHERE run_id = $run AND loop_id = 'each'}),
	"$items|$items",
	"the loop ran $items items, all succeeded");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*), count(DISTINCT hour), min(label), max(label) FROM cron_sink WHERE run = $run}),
	"$items|$items|00:00|23:00",
	'each item wrote its row once');
is( $node->safe_psql(
		'postgres', qq{SELECT total, completed, failed FROM bf_progress($run)}),
	"$items|$items|0",
	'bf_progress shows the finished loop');

ok( $node->poll_query_until(
		'postgres',
		qq{SELECT count(*) >= 1 FROM cron.job_run_details
		    WHERE jobid = $jobid AND status = 'succeeded'}),
	'pg_cron records the job as succeeded');

is($node->safe_psql('postgres', q{SELECT cron.unschedule('bf')}),
	't', 'cron.unschedule removes the job');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cron.job'),
	'0', 'no job is left');

$node->stop;
done_testing();
