# History retention: with batchflow.history_retention set (seconds; 0
# keeps items forever), the launcher deletes the items and item errors of
# runs that finished longer ago, in batches of 500 rows per transaction,
# and records them in batchflow.pruned_run.  The run, its loops and their
# final counts stay (bf_progress still answers); a running run is never
# touched.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('progress_retention', "batchflow.history_retention = 0\n");

is($node->safe_psql('postgres', 'SHOW batchflow.history_retention'),
	'0', 'retention 0: keep forever');

# A finished run of 1200 items, every fifth failing (continue): 1200 items
# and 240 item errors, more than one pruning batch.
$node->safe_psql(
	'postgres', q{
SELECT bf_register('ret_done', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "items"}, "errorStrategy": "continue",
   "children": [{"id": "div", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / (($1)::int % 5)"}]}]}');
SELECT bf_register('ret_slow', '{"nodes": [
  {"id": "slow", "type": "loop", "loopType": "sequential",
   "inputSource": {"variable": "items"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.2)"}]}]}');
});
my $done = $node->safe_psql('postgres',
	q{SELECT bf_start('ret_done', jsonb_build_object('items',
	    (SELECT jsonb_agg(g) FROM generate_series(1, 1200) g)))});
is($node->safe_psql('postgres', "SELECT bf_wait($done, '2 minutes')"),
	'succeeded', 'the 1200-item run finished');
my $counts_before = $node->safe_psql('postgres',
	"SELECT completed, failed FROM bf_progress($done)");
is($counts_before, '960|240', 'its progress: 960 completed, 240 failed');
my $summary_before = $node->safe_psql('postgres',
	"SELECT succeeded, failed, failed_attempts, last_error FROM bf_summary($done)");
is($summary_before, '960|240|240|division by zero',
	'its summary: 240 failed attempts, the last error');

# With retention 0, nothing goes, however old.
sleep(3);
is($node->safe_psql('postgres',
		"SELECT count(*) FROM batchflow.items WHERE run_id = $done"),
	'1200', 'retention 0 keeps the items');

# A run that keeps running for a while (60 items of 0.2 s, one at a time).
my $running = $node->safe_psql('postgres',
	q{SELECT bf_start('ret_slow', jsonb_build_object('items',
	    (SELECT jsonb_agg(g) FROM generate_series(1, 60) g)))});
$node->poll_query_until('postgres',
	"SELECT count(*) >= 3 FROM batchflow.items WHERE run_id = $running AND status = 'succeeded'")
  or die 'the slow run does not progress';

# Retention 2 seconds: the launcher picks it up at its next sweep.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"ALTER SYSTEM SET batchflow.history_retention = '2s'; SELECT pg_reload_conf()");
ok( $node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM batchflow.pruned_run WHERE run_id = $done AND pruned_at IS NOT NULL)"),
	'the finished run is pruned');

is($node->safe_psql('postgres',
		"SELECT count(*) FROM batchflow.items WHERE run_id = $done"),
	'0', 'its items are gone');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM batchflow.item_error WHERE run_id = $done"),
	'0', 'its item errors are gone');
is($node->safe_psql('postgres',
		"SELECT items FROM batchflow.pruned_run WHERE run_id = $done"),
	'1440', 'pruned_run counts the 1200 items and 240 errors deleted');
is($node->safe_psql('postgres',
		"SELECT status FROM batchflow.runs WHERE id = $done"),
	'succeeded', 'the run itself stays');
is($node->safe_psql('postgres',
		"SELECT completed, failed FROM bf_progress($done)"),
	$counts_before, 'bf_progress still has its final counts');
is($node->safe_psql('postgres',
		"SELECT succeeded, failed, failed_attempts, last_error FROM bf_summary($done)"),
	$summary_before, 'bf_summary still has its counts, failed attempts and last error');
my ($rc, $stdout, $stderr) =
  $node->psql('postgres', "SELECT count(*) FROM bf_report($done)");
is($stdout, '0', 'bf_report has no failed item left to show');
like($stderr, qr/the items of run $done were deleted by the history retention/,
	'... and says why');

# The running run: untouched, still running, all its items there.
is($node->safe_psql('postgres',
		"SELECT status FROM batchflow.runs WHERE id = $running"),
	'running', 'the slow run is still running');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM batchflow.items WHERE run_id = $running"),
	'60', 'the running run keeps every item');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM batchflow.pruned_run WHERE run_id = $running"),
	'0', 'the running run is not pruned');

# Once it finishes, it goes too, 2 s later.
$node->safe_psql('postgres', "SELECT bf_cancel($running)");
is($node->safe_psql('postgres', "SELECT bf_wait($running, '1 minute')"),
	'cancelled', 'the slow run is cancelled');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM batchflow.items WHERE run_id = $running"),
	'its items are pruned once it has finished');
ok( $node->safe_psql('postgres',
		"SELECT pruned_at - finished_at >= interval '2 seconds' FROM batchflow.pruned_run WHERE run_id = $running"),
	'not before the retention passed');

ok(!$node->log_contains('ERROR', $log_offset), 'no error in the server log');

$node->stop;
done_testing();
