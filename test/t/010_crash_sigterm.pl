# Exactly-once across SIGTERM and an immediate shutdown.
#
# In the middle of a 2000-item parallel loop whose SQL child inserts one
# row per item, every item worker busy with an item is sent SIGTERM (its
# item's transaction aborts, the launcher starts a replacement), then the
# server is shut down in immediate mode (no checkpoint: crash recovery on
# the next start).  After the restart the run must finish with exactly one
# row per item, every item succeeded with exactly one attempt: an attempt
# is recorded in the same transaction as its effects, so the attempts the
# crash rolled back left no trace at all.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $n    = 2000;
my $node = crash_node('crash_sigterm');
my $run  = start_fill_run($node, $n);

wait_for_progress($node, $n);

# SIGTERM every worker that is executing an item right now.
my @busy;
for (my $try = 0; $try < 100 && !@busy; $try++)
{
	@busy = busy_item_workers($node);
}
cmp_ok(scalar(@busy), '>=', 1, scalar(@busy) . ' workers are executing items');
my $log_offset = -s $node->logfile;
is(kill('TERM', @busy), scalar(@busy), 'SIGTERM sent to the busy workers');
my $pid_list = join(', ', @busy);
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid IN ($pid_list)"),
	'the terminated workers exit');
ok( $node->log_contains(
		'terminating background worker "batchflow worker" due to administrator command',
		$log_offset),
	'the workers were terminated in the middle of their work');

# Then crash the whole server while the run is still going.
my $done = $node->safe_psql('postgres', 'SELECT count(*) FROM sink');
cmp_ok($done, '<', $n, "the run is unfinished before the crash ($done rows)");
is($node->safe_psql('postgres', "SELECT status FROM batchflow.runs WHERE id = $run"),
	'running', 'the run is running before the crash');
$node->stop('immediate');
$node->start;

check_exactly_once($node, $run, $n);

$node->stop;
done_testing();
