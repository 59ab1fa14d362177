# Child workflows on a small pool: 100 parent items at cap 10, each a child
# run of a 10-item loop, on 4 workers.  A parent item waiting for its child
# holds no worker, so the 4 workers keep executing the children's items and
# the whole tree finishes (it would deadlock if a waiting parent held a
# worker).  The parent's cap counts children in flight: never more than 10
# child runs at once, measured from their start and end times.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('child_runs', "batchflow.max_workers = 4\n");

$node->safe_psql(
	'postgres', q{
CREATE TABLE sink (child bigint NOT NULL, part int NOT NULL, PRIMARY KEY (child, part));
SELECT bf_register('leaf', '{"nodes": [
  {"id": "parts", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"static": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink SELECT ($3 ->> ''run'')::bigint, ($1)::int FROM pg_sleep(0.005) RETURNING part"}]}]}');
SELECT bf_register('tree', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 10,
   "inputSource": {"variable": "items"},
   "children": [{"id": "sub", "type": "activity", "activity": "workflow", "workflow": "leaf"}]}]}');
});
is($node->safe_psql('postgres', "SHOW batchflow.max_workers"), '4', 'a pool of 4 workers');
my $run = $node->safe_psql('postgres',
	q{SELECT bf_start('tree', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 100) g)))});

is($node->safe_psql('postgres', "SELECT bf_wait($run, '5 minutes')"),
	'succeeded', 'the tree of 100 child runs finishes on 4 workers');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*), count(*) FILTER (WHERE status = 'succeeded')
  FROM batchflow.runs WHERE parent_run = $run}),
	'100|100', '100 child runs, all succeeded');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*), count(DISTINCT child)
  FROM sink JOIN batchflow.run c ON c.id = sink.child WHERE c.parent_run = $run}),
	'1000|100', 'every child item ran once');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1 AND output ->> 'status' = 'succeeded')
  FROM batchflow.items WHERE run_id = $run}),
	'100', 'every parent item succeeded with its child, in one attempt');
my $max = $node->safe_psql(
	'postgres', qq{
SELECT max(open) FROM (
  SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS open
    FROM (SELECT started_at AS at, 1 AS delta FROM batchflow.run WHERE parent_run = $run
          UNION ALL
          SELECT finished_at, -1 FROM batchflow.run WHERE parent_run = $run) ev) x});
cmp_ok($max, '<=', 10, "at most 10 child runs at once (measured $max)");
cmp_ok($max, '>=', 5, "children overlap: the cap, not the 4 workers, bounds them (measured $max)");

$node->stop;
done_testing();
