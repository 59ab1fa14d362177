# Wake-ups with the idle list (src/wakeup.c): a run never waits for the
# poll interval while a worker could take it.
#
# batchflow.poll_interval is 60 s here, so a lost wake-up shows as a run
# that is still waiting after 15 s.
#
# 1. A wake-up lost between the idle check and the sleep: one worker,
#    held by batchflow.debug_idle_delay between its look (which found
#    nothing) and the idle list; a run committed right then has no idle
#    worker to wake.  The worker must see that new work committed since
#    its look and look again, instead of sleeping.
# 2. Many one-item runs, one after the other, on a pool of 4: each starts
#    at once (only one worker woken per run, no waiting on the others).
# 3. A loop at cap 4 gets 4 workers: the one woken by the commit wakes
#    the 3 more the loop can use (the others would otherwise sleep 60 s).

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BatchflowCrash qw(crash_node);

my $node = crash_node(
	'lost_wakeup', q{
batchflow.max_workers = 1
batchflow.poll_interval = '60s'
});

$node->safe_psql(
	'postgres', q{
SELECT bf_register('one', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 1,
   "inputSource": {"variable": "items"},
   "children": [{"id": "noop", "type": "activity", "activity": "sql", "sql": "SELECT $2"}]}]}');
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'"
) or die "the worker did not start";

# A first run makes sure the worker is up and has looked at least once.
my $first = $node->safe_psql('postgres',
	q{SELECT bf_start('one', '{"items": [0]}')});
is($node->safe_psql('postgres', "SELECT bf_wait($first, '15 seconds')"),
	'succeeded', 'a first run succeeds');

# 1. The window between the look and the idle list.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET batchflow.debug_idle_delay = '700ms'; SELECT pg_reload_conf()");
my $hits = 0;
for my $round (1 .. 5)
{
	# Run A: when it ends, its worker looks again, finds nothing and
	# stays 700 ms in the window ('batchflow: going idle').  Wait for
	# that, then commit run B inside the window.
	my $out = $node->safe_psql(
		'postgres', q{
SELECT bf_start('one', '{"items": [1]}') AS a \gset
SELECT bf_wait(:a, '15 seconds') \g /dev/null
DO $$
BEGIN
    FOR i IN 1 .. 3000 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity
                           WHERE backend_type = 'batchflow worker'
                             AND state = 'active' AND query = 'batchflow: going idle');
        PERFORM pg_sleep(0.002);
    END LOOP;
END $$;
SELECT bf_start('one', '{"items": [2]}') AS b \gset
SELECT pg_stat_clear_snapshot() \g /dev/null
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND state = 'active' AND query = 'batchflow: going idle';
SELECT bf_wait(:b, '15 seconds');
SELECT round(extract(epoch FROM finished_at - started_at)::numeric, 1)
  FROM batchflow.run WHERE id = :b;
});
	my ($in_window, $status, $secs) = split /\n/, $out;
	$hits++ if $in_window eq '1';
	is($status, 'succeeded',
		"round $round: the run committed while the worker was going idle ran (in the window: $in_window)");
	cmp_ok($secs, '<', 15, "round $round: it took $secs s, not the 60 s poll interval");
}
cmp_ok($hits, '>=', 3, "the commit fell inside the window in $hits of 5 rounds");
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET batchflow.debug_idle_delay; SELECT pg_reload_conf()");

# 2 and 3 on a pool of 4.
$node->safe_psql('postgres', 'ALTER SYSTEM SET batchflow.max_workers = 4');
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) = 4 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'"
) or die "the workers did not start";
# Let every worker look once and go idle.
sleep 1;

# 2. One-item runs one after the other.
my $slow = $node->safe_psql(
	'postgres', q{
CREATE TABLE waits (run bigint, secs numeric);
DO $$
DECLARE r bigint;
BEGIN
    FOR i IN 1 .. 30 LOOP
        r := bf_start('one', '{"items": [0]}');
        COMMIT;
        PERFORM bf_wait(r, '15 seconds');
        INSERT INTO waits
        SELECT r, extract(epoch FROM finished_at - started_at) FROM batchflow.run WHERE id = r;
        COMMIT;
    END LOOP;
END $$;
SELECT count(*) FILTER (WHERE status <> 'succeeded') || ' ' || round(max(secs), 2)
  FROM waits JOIN batchflow.run ON run.id = waits.run;
});
my ($not_ok, $max) = split / /, $slow;
is($not_ok, '0', '30 one-item runs in a row all succeeded');
cmp_ok($max, '<', 15, "the slowest took $max s, not the 60 s poll interval");

# 3. A loop at cap 4 with 8 items of 1 s: 4 at once.
$node->safe_psql(
	'postgres', q{
SELECT bf_register('four', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "items"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql", "sql": "SELECT pg_sleep(1), $2"}]}]}');
});
sleep 1;
my $run = $node->safe_psql('postgres',
	q{SELECT bf_start('four', '{"items": [1, 2, 3, 4, 5, 6, 7, 8]}')});
is($node->safe_psql('postgres', "SELECT bf_wait($run, '30 seconds')"),
	'succeeded', 'the cap-4 run succeeded');
my $overlap = $node->safe_psql(
	'postgres', qq{
SELECT max(n) FROM (
  SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n
    FROM (SELECT started_at AS t, 1 AS d FROM batchflow.item WHERE run_id = $run
          UNION ALL
          SELECT finished_at, -1 FROM batchflow.item WHERE run_id = $run) e) s});
is($overlap, '4', 'four items of the cap-4 loop ran at once');

$node->stop;
done_testing();
