# Shared by the TAP tests: a node that preloads batchflow (crash_node, used
# by every test that needs a running pool), and for the crash tests (010 to
# 013) a long parallel loop whose SQL child inserts one row per item, and
# the checks that prove every item took effect exactly once, among them the
# exactly-once oracle of test/lib/exactly_once.sql (oracle_exactly_once),
# for any test.

package BatchflowCrash;

use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Exporter 'import';
our @EXPORT = qw(crash_node start_fill_run busy_item_workers
  wait_for_progress check_exactly_once oracle_exactly_once);

# A node serving database postgres with the default pool of 10 workers.
sub crash_node
{
	my ($name, $extra_conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
max_worker_processes = 32
} . ($extra_conf // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION batchflow');
	return $node;
}

# Register and start a parallel loop (cap 10) of $n items, each inserting
# its own number into sink, whose item column is UNIQUE: executing an item
# twice would fail it with a unique violation.  Each row also records its
# run, its item's index and the transaction it was written in, for the
# oracle.  Returns the run id.
sub start_fill_run
{
	my ($node, $n) = @_;

	$node->safe_psql(
		'postgres', q{
CREATE TABLE sink (item int NOT NULL UNIQUE, pid int NOT NULL DEFAULT pg_backend_pid(),
                   run bigint NOT NULL, idx int NOT NULL,
                   xid xid8 NOT NULL DEFAULT pg_current_xact_id());
SELECT bf_register('fill', '{"nodes": [
  {"id": "fill", "type": "loop", "loopType": "parallel", "concurrency": 10,
   "inputSource": {"variable": "items"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink (item, run, idx) SELECT ($1)::int, ($3->>''run'')::bigint, $2 FROM pg_sleep(0.025) RETURNING item"}]}]}');
});
	return $node->safe_psql('postgres',
		qq{SELECT bf_start('fill', jsonb_build_object('items',
		     (SELECT jsonb_agg(g) FROM generate_series(1, $n) g)))});
}

# Wait until between 20% and 60% of the items are done; returns the count.
sub wait_for_progress
{
	my ($node, $n) = @_;
	my ($lo, $hi) = (int($n * 0.2), int($n * 0.6));

	ok( $node->poll_query_until(
			'postgres', "SELECT count(*) >= $lo FROM sink"),
		"the run reaches 20% ($lo items)");
	my $done = $node->safe_psql('postgres', 'SELECT count(*) FROM sink');
	cmp_ok($done, '<', $hi, "the run is still short of 60% ($done done)");
	return $done;
}

# Pids of the item workers executing an item's SQL right now.
sub busy_item_workers
{
	my ($node) = @_;
	my $pids = $node->safe_psql(
		'postgres', q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND state = 'active'
   AND query LIKE 'INSERT INTO sink%'});
	return grep { $_ ne '' } split /\n/, $pids;
}

# The exactly-once oracle (test/lib/exactly_once.sql) for the loop $loop of
# run $run, whose SQL child writes its effect rows (run, idx, xid) into
# $table: returns "items|succeeded|effects|once|in_completion_txn".  Every
# item that succeeded exactly once, with its effect written in the
# transaction that recorded its completion, gives the same number five
# times.
sub oracle_exactly_once
{
	my ($node, $run, $loop, $table) = @_;
	my $lib = PostgreSQL::Test::Utils::slurp_file(
		"$FindBin::RealBin/../lib/exactly_once.sql");

	$lib =~ s/^\\.*\n//mg;    # psql meta-commands (echo control)
	return $node->safe_psql('postgres',
		$lib . "\nSELECT * FROM pg_temp.bf_exactly_once($run, '$loop', '$table');");
}

# After the crash: the run finishes, and every item took effect once.
sub check_exactly_once
{
	my ($node, $run, $n) = @_;

	is($node->safe_psql('postgres', "SELECT bf_wait($run, '3 minutes')"),
		'succeeded', 'the run resumes after the restart and succeeds');
	is( $node->safe_psql(
			'postgres', 'SELECT count(*), count(DISTINCT item), min(item), max(item) FROM sink'),
		"$n|$n|1|$n",
		"exactly $n rows, one per item, no duplicates");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FILTER (WHERE status = 'succeeded'),
       count(*) FILTER (WHERE attempts = 1),
       count(*) FILTER (WHERE s.item IS NOT NULL)
  FROM batchflow.items i LEFT JOIN sink s ON s.item = (i.item)::int
 WHERE i.run_id = $run}),
		"$n|$n|$n",
		'every item succeeded, with one attempt: the attempts the crash rolled back do not count');
	is(oracle_exactly_once($node, $run, 'fill', 'sink'),
		"$n|$n|$n|$n|$n",
		'oracle: every item\'s row was written in the transaction that recorded its completion');
	is( $node->safe_psql(
			'postgres', "SELECT count(*) FROM batchflow.item_error WHERE run_id = $run"),
		'0', 'no attempt failed');
	is( $node->safe_psql(
			'postgres', "SELECT status, error IS NULL FROM batchflow.runs WHERE id = $run"),
		'succeeded|t', 'the run is recorded as succeeded');
	return;
}

1;
