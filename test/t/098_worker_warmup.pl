# A worker's warm-up (src/worker_warmup.c): once per process, at its first
# idle moment, each worker rehearses a claim and a loop's close on a
# throwaway workflow, run and loop, in a transaction it rolls back.
#
# Every worker of the pool must do it once, as soon as the extension
# exists, and nobody may see anything of it: no workflow, run, loop or
# progress row, no metric count, no notification, no sequence moved (the
# first real run and loop still get id 1); and the first real run still
# runs and counts normally afterwards.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $workers = 3;
my $node = PostgreSQL::Test::Cluster->new('worker_warmup');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
max_worker_processes = 32
batchflow.max_workers = $workers
batchflow.poll_interval = '100ms'
log_min_messages = debug1
});
$node->start;

# A listener for every notification batchflow sends, from before the
# extension (and with it the pool) exists.
my ($in, $out, $err) = ('', '', '');
my $listener = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
$in .= "LISTEN batchflow_progress;\nSELECT 'listening';\n";
$listener->pump until $out =~ /listening/;

$node->safe_psql('postgres', 'CREATE EXTENSION batchflow');
$node->poll_query_until('postgres',
	"SELECT count(*) = $workers FROM pg_stat_activity WHERE backend_type = 'batchflow worker'"
) or die "the workers did not start";
my $log;

# Each worker warms up once, within a few of its looks.
my $warmed = 0;
for (1 .. 300)
{
	$log = slurp_file($node->logfile);
	$warmed = () = $log =~ /batchflow worker warmed up/g;
	last if $warmed >= $workers;
	usleep(100_000);
}
is($warmed, $workers, "each of the $workers workers warmed up");
unlike($log, qr/skipped its warm-up/, 'no warm-up failed');
my @pids = $log =~ /\[(\d+)\] DEBUG:  batchflow worker warmed up/g;
my %distinct = map { $_ => 1 } @pids;
is(scalar(keys %distinct), $workers, 'once per worker process');

# Nothing of the rehearsals is left or was seen.
is( $node->safe_psql(
		'postgres', q{
SELECT (SELECT count(*) FROM batchflow.workflow) || ' ' ||
       (SELECT count(*) FROM batchflow.workflow_version) || ' ' ||
       (SELECT count(*) FROM batchflow.run) || ' ' ||
       (SELECT count(*) FROM batchflow.loop) || ' ' ||
       (SELECT count(*) FROM batchflow.loop_progress) || ' ' ||
       (SELECT count(*) FROM batchflow.metric_loop) || ' ' ||
       (SELECT count(*) FROM batchflow.metric_counter) || ' ' ||
       (SELECT count(*) FROM batchflow.metric_run_counter) || ' ' ||
       (SELECT is_called FROM batchflow.workflow_version_id_seq) || ' ' ||
       (SELECT is_called FROM batchflow.run_id_seq) || ' ' ||
       (SELECT is_called FROM batchflow.loop_id_seq)}),
	'0 0 0 0 0 0 0 0 false false false',
	'no row, count or sequence value is left by the rehearsals');
$in .= "SELECT 'still listening';\n";
$listener->pump until $out =~ /still listening/;
unlike($out, qr/Asynchronous notification/,
	'no notification was sent by the rehearsals (so far)');

# The first real workflow and run: ids 1, both nodes, every item once,
# counted once.
$node->safe_psql(
	'postgres', q{
CREATE TABLE sink (item int NOT NULL UNIQUE);
SELECT bf_register('two', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "items"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink SELECT ($1)::int RETURNING item"}]},
  {"id": "after", "type": "activity", "activity": "sql", "sql": "SELECT 1 AS done"}]}');
});
is($node->safe_psql('postgres', 'SELECT id FROM batchflow.workflow_version'),
	'1', 'the first real workflow version gets id 1');
my $run = $node->safe_psql('postgres',
	q{SELECT bf_start('two', '{"items": [1, 2, 3, 4, 5]}')});
is($run, '1', 'the first real run gets id 1');
is($node->safe_psql('postgres', "SELECT bf_wait($run, '30 seconds')"),
	'succeeded', 'the run succeeded');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(id || ':' || node_id || ':' || status, ',' ORDER BY id) FROM batchflow.loop WHERE run_id = $run"
	),
	'1:each:succeeded,2:after:succeeded',
	'its loops got ids 1 and 2');
is($node->safe_psql('postgres', 'SELECT string_agg(item::text, \',\' ORDER BY item) FROM sink'),
	'1,2,3,4,5', 'every item executed once');
is( $node->safe_psql(
		'postgres',
		q{SELECT sum(succeeded) FILTER (WHERE loop_id = 'each') || ' ' ||
                 sum(succeeded) FILTER (WHERE loop_id = 'after')
            FROM batchflow.metric_counter WHERE workflow = 'two'}),
	'5 1',
	'the metric counts are those of the real run only');
is( $node->safe_psql(
		'postgres',
		"SELECT completed || ' ' || total || ' ' || status FROM bf_progress($run) WHERE loop_id = 'each'"),
	'5 5 succeeded',
	'its progress is complete');

# The listener does see notifications: the real run's, which the
# database's announcer may send a moment after the commit.  Every one it
# received is about run 1: none came late from a rehearsal.
for my $i (1 .. 100)
{
	$in .= "SELECT 'after the run $i';\n";
	$listener->pump until $out =~ /after the run $i\b/;
	last if $out =~ /"status" *: *"succeeded"/;
	usleep(100_000);
}
like($out, qr/Asynchronous notification "batchflow_progress"/,
	'the listener received the real run\'s notifications');
my @runs = $out =~ /"run" *: *(-?\d+)/g;
ok(@runs > 0 && !grep({ $_ != $run } @runs),
	'every notification received is about the real run (' . scalar(@runs) . ')');

$in .= "\\q\n";
$listener->finish;
$node->stop;
done_testing();
