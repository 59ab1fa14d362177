# Progress counts reconcile with the items after a crash.  Workers keep
# the counts of their last items in shared memory, which a crash wipes; the
# launcher must then rebuild the counters of open loops from
# batchflow.item, and bf_progress must count items exactly meanwhile.
#
# The run is paused at will: every item waits while a "gate" row says
# closed (a table, so the gate stays closed across the crash).  With the
# gate closed no item commits, and bf_progress must equal the count of
# finished items exactly: before the crash (counters + pending counts),
# right after the restart, and after the launcher's rebuild.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $node = crash_node('progress_crash');
$node->safe_psql(
	'postgres', q{
CREATE TABLE gate (closed boolean NOT NULL);
CREATE TABLE effect (run bigint NOT NULL, idx int NOT NULL,
                     xid xid8 NOT NULL DEFAULT pg_current_xact_id(), UNIQUE (run, idx));
INSERT INTO gate VALUES (false);
GRANT SELECT ON gate TO PUBLIC;
CREATE FUNCTION pass_gate() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WHILE (SELECT closed FROM gate) LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END;
$$;
-- Every 50th item fails, at execution, after the gate: with a custom plan
-- $1 is a constant, and a plain 1 / ($1 % 50) would be folded into a
-- division by zero while planning, failing the item before pass_gate()
-- (the volatile random() keeps the expression from being folded).
SELECT bf_register('crash_progress', '{"nodes": [
  {"id": "gated", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "items"}, "errorStrategy": "continue",
   "children": [{"id": "pass", "type": "activity", "activity": "sql",
                 "sql": "SELECT pass_gate(), pg_sleep(0.005), 1 / ((($1)::int % 50) + (random() * 0)::int)"},
                {"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO effect (run, idx) VALUES (($3->>''run'')::bigint, $2)"}]}]}');
});
my $run = $node->safe_psql('postgres',
	q{SELECT bf_start('crash_progress', jsonb_build_object('items',
	    (SELECT jsonb_agg(g) FROM generate_series(1, 3000) g)))});

my $done_items = "SELECT count(*) FILTER (WHERE status = 'succeeded') || '|' || count(*) FILTER (WHERE status = 'failed')
                    FROM batchflow.items WHERE run_id = $run";
my $progress = "SELECT completed || '|' || failed FROM bf_progress($run)";

# Close the gate once some items are done, and wait until the items in
# flight are all waiting at it (the finished count stays put).
$node->poll_query_until('postgres',
	"SELECT count(*) >= 500 FROM batchflow.items WHERE run_id = $run AND status <> 'pending'")
  or die 'the run does not progress';
$node->safe_psql('postgres', 'UPDATE gate SET closed = true');

sub wait_for_pause
{
	my ($what) = @_;
	my $last = '';
	for (my $i = 0; $i < 120; $i++)
	{
		my $now = $node->safe_psql('postgres',
			"SELECT ($done_items) || '|' || (SELECT count(*) FROM batchflow.active_items())");
		return $now if $now eq $last && $now =~ /\|4$/;
		$last = $now;
		sleep(0.5);
	}
	die "the run does not pause ($what): $last";
}

my $paused = wait_for_pause('before the crash');
note("paused before the crash: succeeded|failed|active = $paused");
my $items_before = $node->safe_psql('postgres', $done_items);
cmp_ok((split /\|/, $items_before)[0], '<', 3000, 'the run is unfinished');
is($node->safe_psql('postgres', $progress), $items_before,
	'before the crash, bf_progress equals the finished items');
cmp_ok($node->safe_psql('postgres', "SELECT count(*) FROM batchflow.progress_counter"),
	'>', 0, 'workers wrote batched counters');
# Some counts are only in the workers' shared memory (each worker writes
# every 10 items): the crash will lose them.
my ($a, $b) = split /\|/, $items_before;
cmp_ok($node->safe_psql('postgres',
		"SELECT sum(completed + failed) FROM batchflow.progress_counter"),
	'<', $a + $b, 'some counts are not written yet');

# Crash: immediate stop, no shutdown checkpoint.  The gate stays closed.
my $log_offset = -s $node->logfile;
$node->stop('immediate');
$node->start;

# Right away, and after the launcher's rebuild, bf_progress is exact.
is($node->safe_psql('postgres', $progress), $items_before,
	'after the restart, bf_progress equals the finished items');
ok( $node->wait_for_log(qr/batchflow rebuilt the progress counters of \d+ open loops/,
		$log_offset),
	'the launcher rebuilt the counters');
wait_for_pause('after the restart');
my $items_after = $node->safe_psql('postgres', $done_items);
is($items_after, $items_before, 'no item finished while the gate was closed');
is($node->safe_psql('postgres', $progress), $items_after,
	'after the rebuild, bf_progress equals the finished items');
is( $node->safe_psql(
		'postgres',
		"SELECT p.state || '|' || p.completed || '|' || p.failed
		   FROM batchflow.loop_progress p JOIN batchflow.loop l ON l.id = p.loop_ref
		  WHERE l.run_id = $run"),
	"live|$items_after",
	'the rebuilt base counts are the items\' counts');
is($node->safe_psql('postgres', 'SELECT count(*) FROM batchflow.progress_counter'),
	'0', 'the old per-worker counters were dropped');

# Open the gate: the run finishes, the counts are right.
$node->safe_psql('postgres', 'UPDATE gate SET closed = false');
is($node->safe_psql('postgres', "SELECT bf_wait($run, '5 minutes')"),
	'succeeded', 'the run finishes');
is($node->safe_psql('postgres', "SELECT completed || '|' || failed || '|' || percent FROM bf_progress($run)"),
	'2940|60|100.0', 'final progress: 2940 completed, 60 failed (every 50th), 100 %');
is($node->safe_psql('postgres', $done_items), '2940|60', 'the items agree');
is(oracle_exactly_once($node, $run, 'gated', 'effect'), '3000|2940|2940|2940|2940',
	'oracle: each succeeded item\'s effect was written once, in the transaction that recorded its completion');

$node->stop;
done_testing();
