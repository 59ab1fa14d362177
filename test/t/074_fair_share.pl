# A busy database does not starve another: the pool is shared out.
#
# Database "big" gets a run of 100,000 items (5 ms each, cap 10) that keeps
# every worker of the pool busy.  Database "small" runs 10 items (50 ms
# each, cap 10) first alone, then while "big" runs.  The small run must
# finish within 1 s of its time alone.  Both times are printed (from the
# runs' started_at/finished_at), and so is how many workers each database
# had while both ran.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('fair_share');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.max_workers = 8
max_worker_processes = 16
});
$node->start;

foreach my $db (qw(big small))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql(
		$db, q{
CREATE EXTENSION batchflow;
SELECT bf_register('work', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 10,
   "inputSource": {"variable": "items"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(($1 ->> ''s'')::float8)"}]}]}');
});
}

# The small run: 10 items of 50 ms; returns its duration in seconds.
sub small_run
{
	my $run = $node->safe_psql('small',
		q{SELECT bf_start('work', jsonb_build_object('items',
		     (SELECT jsonb_agg(jsonb_build_object('s', 0.05)) FROM generate_series(1, 10))))});
	is($node->safe_psql('small', "SELECT bf_wait($run, '2 minutes')"), 'succeeded',
		'the small run succeeds');
	return $node->safe_psql('small',
		"SELECT extract(epoch FROM finished_at - started_at) FROM batchflow.runs WHERE id = $run");
}

small_run();    # warm-up
my $alone = small_run();

my $big = $node->safe_psql('big',
	q{SELECT bf_start('work', jsonb_build_object('items',
	     (SELECT jsonb_agg(jsonb_build_object('s', 0.005)) FROM generate_series(1, 100000))))});
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) = 8 FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND datname = 'big'}),
	'the big run takes the whole pool of 8 workers');
ok( $node->poll_query_until(
		'big', q{SELECT completed >= 500 FROM bf_progress(1)}),
	'the big run is under way');

my $contended = small_run();
my $workers = $node->safe_psql(
	'postgres', q{
SELECT string_agg(datname || ':' || n, ' ' ORDER BY datname)
  FROM (SELECT datname, count(*) n FROM pg_stat_activity
         WHERE backend_type = 'batchflow worker' GROUP BY datname) s});
my $big_done = $node->safe_psql('big', "SELECT completed FROM bf_progress($big)");
cmp_ok($big_done, '<', 100000, "the big run was still going ($big_done of 100000 done)");

diag(sprintf('small run alone: %.3f s; while the big run runs: %.3f s (workers then: %s)',
		$alone, $contended, $workers));
cmp_ok($contended - $alone, '<', 1.0,
	sprintf('the small run finishes within 1 s of its time alone (%.3f s vs %.3f s)',
		$contended, $alone));

# The big run gets its workers back.
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) = 8 FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND datname = 'big'}),
	'once the small run is done, the big one has the whole pool again');
$node->safe_psql('big', "SELECT bf_cancel($big)");

$node->stop;
done_testing();
