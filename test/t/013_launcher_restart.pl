# The launcher itself is terminated in the middle of a run.
#
# SIGTERM to the launcher stops its pool of item workers (the items they
# were executing roll back and stay pending) and the launcher exits; the
# postmaster starts it again after its restart interval (5 s), and the new
# launcher starts a new pool of batchflow.max_workers workers.  While
# there is no pool nothing executes; afterwards the run goes on and
# finishes with every item executed exactly once.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $n    = 2000;
my $node = crash_node('launcher_restart', "batchflow.max_workers = 4\n");

ok( $node->poll_query_until(
		'postgres',
		q{SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'the launcher starts its pool of 4 workers');
my $launcher = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow launcher'});
like($launcher, qr/^\d+$/, 'one launcher');
my $old_workers = $node->safe_psql('postgres',
	q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'batchflow worker'});

my $run = start_fill_run($node, $n);
wait_for_progress($node, $n);

my $log_offset = -s $node->logfile;
is(kill('TERM', $launcher), 1, 'SIGTERM sent to the launcher');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = 0 FROM pg_stat_activity
 WHERE pid IN ($launcher, $old_workers)}),
	'the launcher and its whole pool exit');
ok($node->log_contains('batchflow launcher shutting down', $log_offset),
	'the launcher shut down cleanly');

# No pool, no progress (the postmaster waits 5 s before restarting it).
my $paused = $node->safe_psql('postgres', 'SELECT count(*) FROM sink');
cmp_ok($paused, '<', $n, "the run is unfinished ($paused rows)");
is($node->safe_psql('postgres', "SELECT status FROM batchflow.runs WHERE id = $run"),
	'running', 'the run is still running');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type IN ('batchflow worker', 'batchflow launcher')}),
	'0', 'no launcher and no worker for now');
sleep(1);
is($node->safe_psql('postgres', 'SELECT count(*) FROM sink'),
	$paused, 'nothing executes while there is no pool');

# The postmaster restarts the launcher, which starts a new pool.
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = 1 AND bool_and(pid <> $launcher)
  FROM pg_stat_activity WHERE backend_type = 'batchflow launcher'}),
	'the postmaster starts a new launcher');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = 4 AND bool_and(pid NOT IN ($old_workers))
  FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'the new launcher starts a new pool of 4 workers');

check_exactly_once($node, $run, $n);

$node->stop;
done_testing();
