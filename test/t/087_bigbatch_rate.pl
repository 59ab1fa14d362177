# maxItemsPerSecond: 100 items at 20 per second take 5 s (within 5 %).
#
# The items are instant and the loop's cap (10) and the pool (10 workers)
# would run them in a fraction of a second: only the rate holds them back.
# The starts are spaced 1/20 s apart, so no one-second window holds more
# than 21 starts, and bf_progress says 'throttled' while the loop waits.
# The node is fresh from initdb, so the launcher's first start is tested
# too: it must serve the database at once.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('bigbatch_rate');

$node->safe_psql(
	'postgres', q{
CREATE TABLE starts (item int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
SELECT bf_register('paced', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 10,
   "maxItemsPerSecond": 20, "inputSource": {"variable": "items"},
   "children": [{"id": "mark", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO starts (item) VALUES (($1)::int)"}]}]}');
});
my $run = $node->safe_psql('postgres',
	q{SELECT bf_start('paced', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 100) g)))});

ok( $node->poll_query_until(
		'postgres', "SELECT status = 'throttled' FROM bf_progress($run)"),
	'bf_progress shows the loop throttled');
is($node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')"),
	'succeeded', 'the run succeeds');

# 100 starts, 99 intervals of 50 ms: the first to the last start is 4.95 s.
my $span = $node->safe_psql('postgres',
	'SELECT extract(epoch FROM max(at) - min(at)) FROM starts');
my $dur = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM finished_at - started_at) FROM batchflow.run WHERE id = $run");
note("first to last start: $span s; run: $dur s");
cmp_ok($dur, '>=', 4.75, "the run takes at least 5 s - 5 % ($dur s)");
cmp_ok($dur, '<=', 5.25, "the run takes at most 5 s + 5 % ($dur s)");
cmp_ok($span, '>=', 4.95 * 0.95, "starts spread over 4.95 s (-5 %): $span s");
is( $node->safe_psql(
		'postgres', q{
SELECT max(n) <= 21 FROM (
  SELECT (SELECT count(*) FROM starts b WHERE b.at >= a.at AND b.at < a.at + interval '1 second') AS n
    FROM starts a) s}),
	't', 'no one-second window holds more than 21 starts');
is($node->safe_psql('postgres', "SELECT status FROM bf_progress($run)"),
	'succeeded', 'finished, the loop is no longer shown as throttled');

# The first start after initdb: the launcher (connected to no database)
# once failed there with FATAL and served nothing until the postmaster
# started it again 5 s later, which made this run take 9.8 s.
my $log = slurp_file($node->logfile);
is(scalar(() = $log =~ /batchflow launcher started/g),
	1, 'the launcher started once, at the first start after initdb');
unlike($log, qr/FATAL/, 'no batchflow process failed with FATAL');

$node->stop;
done_testing();
