# The launcher keeps the pool full, and pg_stat_activity shows the work.
#
# While an item executes, pg_stat_activity shows its worker with
# backend_type 'batchflow worker', state active and the item's SQL as its
# query.  That busy worker and an idle one are sent SIGTERM: the item's
# attempt rolls back, the launcher starts replacements until the pool has
# batchflow.max_workers workers again, and the item runs once more on
# another worker, for one recorded attempt.  A fast shutdown stops the
# launcher and its pool cleanly.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('worker_restart', "batchflow.max_workers = 4\n");

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'the launcher starts batchflow.max_workers workers');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow launcher'}),
	'1',
	'one launcher');

# The first attempt sleeps until it is killed (up to 60 s); once slow_go
# has a row, an attempt finishes at once.  (A fixed short sleep raced the
# kill on a loaded machine: the item could commit before SIGTERM arrived.)
my $sql =
  'INSERT INTO slow_sink (idx) SELECT $2 FROM pg_sleep(CASE WHEN EXISTS (SELECT FROM slow_go) THEN 0 ELSE 60 END) RETURNING idx';
$node->safe_psql(
	'postgres', qq{
CREATE TABLE slow_go (go bool);
CREATE TABLE slow_sink (idx int NOT NULL, pid int NOT NULL DEFAULT pg_backend_pid());
SELECT bf_register('slow', '{"nodes": [
  {"id": "one", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": ["only"]},
   "children": [{"id": "sleep", "type": "activity", "activity": "sql", "sql": "$sql"}]}]}');
});
my $run = $node->safe_psql('postgres', q{SELECT bf_start('slow')});

# The busy worker shows the item's SQL in pg_stat_activity.
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = 1 FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND state = 'active' AND query = '$sql'}),
	'pg_stat_activity shows a batchflow worker running the item\'s SQL');
my $busy = $node->safe_psql(
	'postgres', qq{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND state = 'active' AND query = '$sql'});
my $idle = $node->safe_psql(
	'postgres', qq{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND pid <> $busy LIMIT 1});
my $before = $node->safe_psql('postgres',
	q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'batchflow worker'});

$node->safe_psql('postgres', 'INSERT INTO slow_go VALUES (true)');
is(kill('TERM', $busy, $idle), 2, 'SIGTERM sent to a busy and an idle worker');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = 4 AND bool_and(pid NOT IN ($busy, $idle))
  FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'the launcher replaces both: the pool is back to 4 workers');
isnt(
	$node->safe_psql('postgres',
		q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	$before,
	'with new processes');

is($node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')"),
	'succeeded', 'the interrupted item runs again and the run succeeds');
is( $node->safe_psql(
		'postgres', "SELECT count(*), bool_and(pid <> $busy) FROM slow_sink"),
	'1|t',
	'its effect is there once, made by another worker');
is( $node->safe_psql(
		'postgres', "SELECT status, attempts FROM batchflow.items WHERE run_id = $run"),
	'succeeded|1',
	'the terminated attempt is not counted');

my $log_offset = -s $node->logfile;
$node->stop('fast');
ok($node->log_contains('batchflow launcher shutting down', $log_offset),
	'a fast shutdown stops the launcher cleanly');

done_testing();
