# dependsOn across a crash restart: a 1000-item dependency graph (item i
# waits for items i-10 and i-13) is half done when a busy item worker is
# killed with SIGKILL, which restarts every process.  The run must resume
# and finish with every item executed exactly once, and no item may have
# started before all its dependencies had ended succeeded.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $n    = 1000;
my $two  = $n - 13;    # items 14 .. n wait for two items, 11 .. 13 for one
my $node = crash_node('deps_crash', "restart_after_crash = on\n");

$node->safe_psql(
	'postgres', q{
CREATE TABLE sink (item int NOT NULL UNIQUE, at timestamptz NOT NULL DEFAULT clock_timestamp());
SELECT bf_register('graph', '{"nodes": [
  {"id": "g", "type": "loop", "loopType": "parallel", "concurrency": 10,
   "inputSource": {"variable": "items"}, "dependsOn": {"key": "k", "after": "deps"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink (item) SELECT ($1 ->> ''k'')::int FROM pg_sleep(0.025) RETURNING item"}]}]}');
});
my $run = $node->safe_psql(
	'postgres', qq{
SELECT bf_start('graph', jsonb_build_object('items',
  (SELECT jsonb_agg(jsonb_build_object('k', g, 'deps',
            (SELECT coalesce(jsonb_agg(d), '[]') FROM unnest(ARRAY[g - 10, g - 13]) d WHERE d >= 1))
          ORDER BY g)
     FROM generate_series(1, $n) g)))});

ok($node->poll_query_until('postgres', 'SELECT count(*) >= 300 FROM sink'),
	'the graph is under way');
my $done = $node->safe_psql('postgres', 'SELECT count(*) FROM sink');
cmp_ok($done, '<', 700, "the graph is still short of 70% ($done done)");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) > 0 FROM batchflow.item i WHERE i.run_id = $run AND i.status = 'pending' AND i.unmet > 0
   AND NOT EXISTS (SELECT 1 FROM batchflow.item_ready r WHERE r.loop_ref = i.loop_ref AND r.idx = i.idx)}),
	't', 'some items are still waiting for their dependencies');

my @busy;
for (my $try = 0; $try < 100 && !@busy; $try++)
{
	@busy = busy_item_workers($node);
}
cmp_ok(scalar(@busy), '>=', 1, 'workers are executing items');
my $log_offset = -s $node->logfile;
is(kill('KILL', $busy[0]), 1, "SIGKILL sent to busy worker $busy[0]");
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
	'the server is back after the crash restart');

is($node->safe_psql('postgres', "SELECT bf_wait($run, '3 minutes')"),
	'succeeded', 'the graph resumes after the restart and succeeds');
is( $node->safe_psql(
		'postgres', 'SELECT count(*), count(DISTINCT item), min(item), max(item) FROM sink'),
	"$n|$n|1|$n",
	"exactly $n rows, one per item");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE attempts = 1),
       (SELECT count(*) FROM batchflow.item_wait w WHERE w.run_id = $run AND w.unmet = 0),
       count(*) FILTER (WHERE unmet > 1),
       (SELECT count(*) FROM batchflow.item_wait w WHERE w.run_id = $run),
       (SELECT count(*) FROM batchflow.item_ready r WHERE r.run_id = $run)
  FROM batchflow.item WHERE run_id = $run}),
	"$n|$n|$two|$two|$two|0",
	'every item succeeded once, every dependency was counted down exactly once (each count of an item with several is 0), none is left ready');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*)
  FROM batchflow.item i
  JOIN batchflow.item_dep d ON d.loop_ref = i.loop_ref AND d.idx = i.idx
  JOIN batchflow.item x ON x.loop_ref = d.loop_ref AND x.idx = d.dep_idx
  JOIN sink si ON si.item = (i.item ->> 'k')::int
  JOIN sink sx ON sx.item = (x.item ->> 'k')::int
 WHERE i.run_id = $run
   AND (x.status <> 'succeeded' OR x.finished_at > i.started_at OR sx.at > si.at)}),
	'0', 'no item started before all its dependencies had ended succeeded');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM batchflow.item_dep WHERE run_id = $run"),
	(2 * $n - 10 - 13), 'the graph has its 1977 edges');

$node->stop;
done_testing();
