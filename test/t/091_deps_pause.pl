# bf_pause of a run whose dependsOn loop executes short items: a worker
# that batches short items (batchflow.batch_time) takes the next ready item
# into the same transaction only while the run is not paused, as it does
# in a plain loop.  A chain of 3000 tiny items at cap 1 runs as batches of
# up to a second; after bf_pause commits no item may start (items started
# later than 50 ms after it are counted), and after bf_resume the chain
# finishes with every item executed once.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $n    = 3000;
my $node = crash_node('deps_pause', "batchflow.batch_time = 1000\n");

$node->safe_psql(
	'postgres', q{
CREATE TABLE sink (item int NOT NULL UNIQUE);
SELECT bf_register('chain', '{"nodes": [
  {"id": "c", "type": "loop", "loopType": "parallel", "concurrency": 1,
   "inputSource": {"variable": "items"}, "dependsOn": {"key": "k", "after": "deps"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink (item) SELECT ($1 ->> ''k'')::int FROM pg_sleep(0.002) RETURNING item"}]}]}');
});
my $run = $node->safe_psql(
	'postgres', qq{
SELECT bf_start('chain', jsonb_build_object('items',
  (SELECT jsonb_agg(jsonb_build_object('k', g, 'deps',
            CASE WHEN g = 1 THEN '[]'::jsonb ELSE jsonb_build_array(g - 1) END) ORDER BY g)
     FROM generate_series(1, $n) g)))});

ok($node->poll_query_until('postgres', 'SELECT count(*) >= 50 FROM sink'),
	'the chain is under way (a first batch committed)');
is($node->safe_psql('postgres', "SELECT bf_pause($run)"), 't', 'bf_pause returns true');
my $paused_at = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM batchflow.active_items() WHERE run_id = $run"),
	'the batch in flight ends');
my $done = $node->safe_psql('postgres', 'SELECT count(*) FROM sink');
cmp_ok($done, '<', $n, "$done of $n items done when paused");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM batchflow.item
 WHERE run_id = $run AND started_at > '$paused_at'::timestamptz + interval '50 ms'}),
	'0',
	'no item started after the pause committed');
is($node->safe_psql('postgres', qq{SELECT bf_wait($run, '2 seconds')}), 'paused', 'the run stays paused');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sink'), $done, 'no item took effect while paused');

is($node->safe_psql('postgres', "SELECT bf_resume($run)"), 't', 'bf_resume returns true');
is($node->safe_psql('postgres', qq{SELECT bf_wait($run, '3 minutes')}), 'succeeded', 'the resumed chain succeeds');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT item), min(item), max(item) FROM sink'),
	"$n|$n|1|$n", "exactly $n rows, one per item");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM batchflow.item WHERE run_id = $run AND status = 'succeeded' AND attempts = 1}),
	$n, 'every item succeeded at its first attempt');

$node->stop;
done_testing();
