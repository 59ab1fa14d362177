# A loop whose row another session holds when its last item ends is still
# closed at once when that session lets go (src/loop_close.c).
#
# The workers do not wait for the loop row's lock when they close a loop
# (FOR UPDATE SKIP LOCKED): they try again within BF_CLOSE_RETRY_MS.  Here
# a session holds the row (FOR KEY SHARE, as a worker announcing progress
# does; it conflicts with the close's FOR UPDATE) from before the last item
# ends until well after, and closes nothing.  batchflow.poll_interval is
# 60 s, and with it the sweep's interval: a worker that skipped the busy
# loop and forgot it would leave the run waiting for a minute.  The run
# must instead reach its second node and finish within a few seconds of
# the release, once, with every item executed once.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use BatchflowCrash qw(crash_node);

my $node = crash_node(
	'close_busy', q{
batchflow.max_workers = 2
batchflow.poll_interval = '60s'
});

$node->safe_psql(
	'postgres', q{
CREATE TABLE sink (item int NOT NULL UNIQUE);
SELECT bf_register('busy', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "items"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink SELECT ($1)::int FROM pg_sleep(1) RETURNING item"}]},
  {"id": "after", "type": "activity", "activity": "sql", "sql": "SELECT 1 AS done"}]}');
});
for my $round (1 .. 3)
{
	my $run = $node->safe_psql('postgres',
		"SELECT bf_start('busy', jsonb_build_object('items', jsonb_build_array($round * 10, $round * 10 + 1)))"
	);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM batchflow.active_items() WHERE run_id = $run")
	  or die "the items of run $run did not start";

	# Hold the loop's row while both items end, and for 1.5 s after.
	my ($in, $out, $err) = ('', '', '');
	my $holder = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$in, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$in .= "BEGIN;\nSELECT 1 FROM batchflow.loop WHERE run_id = $run FOR KEY SHARE;\n";
	$holder->pump until $out =~ /^1$/m;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM batchflow.item WHERE run_id = $run AND status = 'succeeded'")
	  or die "the items of run $run did not end";
	usleep(1_500_000);
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM batchflow.loop WHERE run_id = $run AND finished_at IS NULL"),
		'1',
		"round $round: the loop is still open while its row is held");

	my $released = time();
	$in .= "COMMIT;\n\\q\n";
	$holder->finish;
	is($node->safe_psql('postgres', "SELECT bf_wait($run, '30 seconds')"),
		'succeeded', "round $round: the run succeeded");
	my $took = time() - $released;
	cmp_ok($took, '<', 5,
		"round $round: it finished within 5 s of the release (took "
		  . sprintf('%.2f', $took) . ' s)');
	is( $node->safe_psql('postgres',
			"SELECT string_agg(node_id || ':' || status, ',' ORDER BY node_index) FROM batchflow.loop WHERE run_id = $run"
		),
		'each:succeeded,after:succeeded',
		"round $round: each node got one loop, both succeeded");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM sink'),
	'6', 'every item took effect once');

$node->stop;
done_testing();
