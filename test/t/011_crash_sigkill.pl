# Exactly-once across a crash restart caused by SIGKILL.
#
# In the middle of a 2000-item parallel loop whose SQL child inserts one
# row per item, one item worker busy with an item is killed with SIGKILL.
# The postmaster treats that as a crash: it kills every other process,
# reinitializes shared memory and runs crash recovery, and the launcher
# starts again with a fresh pool.  The run must finish with exactly one row
# per item and every item succeeded with exactly one attempt.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $n    = 2000;
my $node = crash_node('crash_sigkill', "restart_after_crash = on\n");
my $run  = start_fill_run($node, $n);

wait_for_progress($node, $n);

my @busy;
for (my $try = 0; $try < 100 && !@busy; $try++)
{
	@busy = busy_item_workers($node);
}
cmp_ok(scalar(@busy), '>=', 1, 'workers are executing items');
my $log_offset = -s $node->logfile;
is(kill('KILL', $busy[0]), 1, "SIGKILL sent to busy worker $busy[0]");

# The postmaster restarts everything; wait until it accepts connections.
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
ok( $node->log_contains(
		qr/background worker "batchflow worker" \(PID $busy[0]\) was terminated by signal 9/,
		$log_offset),
	'the postmaster saw the worker die of SIGKILL and restarts every process');
ok( $node->poll_query_until('postgres', 'SELECT 1', '1'),
	'the server is back after the crash restart');

check_exactly_once($node, $run, $n);

$node->stop;
done_testing();
