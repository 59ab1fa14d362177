# The metric counters at a loop close (src/metrics_sync.c).
#
# 1. A worker closing a loop never waits for another session's counter
#    row.  The closing transaction keeps the metric_counter and
#    metric_run_counter rows it added to locked until it commits.  Rows
#    used to be chosen by pid modulo 16 for every session, so a worker
#    whose pid shared that remainder with a session in the middle of a
#    transaction that had closed a loop of the same workflow (bf_cancel
#    closes it in the caller's transaction) waited for that commit: here
#    such a session is found among fresh connections and holds its
#    transaction open while a run of the same workflow executes; the run
#    must succeed (before: bf_wait gave up with 'running', the worker
#    blocked in the counter upsert).  Workers now add to the row of their
#    pool slot.
# 2. The counts the close adds up are those of the items themselves: for a
#    workflow with items of various durations, failures and retries, the
#    sums over the counter rows equal the counts, duration sum and
#    histogram computed here from the item rows, including when scrapes
#    moved the loop's prefix while it ran.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use BatchflowCrash qw(crash_node);

my $node = crash_node('metric_rows', q{
batchflow.max_workers = 1
});

$node->safe_psql(
	'postgres', q{
SELECT bf_register('one', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 1,
   "inputSource": {"variable": "items"},
   "children": [{"id": "act", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'")
  or die 'the worker did not start';
my $wpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow worker'");

# A session whose pid has the worker's remainder modulo 16.
my ($in, $out, $err, $h);
for my $try (1 .. 400)
{
	($in, $out, $err) = ('', '', '');
	$h = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$in, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$in .= "SELECT 'pid=' || pg_backend_pid();\n";
	$h->pump until $out =~ /^pid=(\d+)$/m;
	my ($spid) = $out =~ /^pid=(\d+)$/m;
	if ($spid % 16 == $wpid % 16)
	{
		note("worker pid $wpid, session pid $spid (after $try connections)");
		last;
	}
	$in .= "\\q\n";
	$h->finish;
	undef $h;
}
die 'no session with the worker\'s pid remainder' unless defined $h;

# That session closes a loop of the workflow and stays in its transaction.
$out = '';
$in .= q{BEGIN;
SELECT 'run=' || bf_start('one', '{"items": [1]}');
};
$h->pump until $out =~ /^run=(\d+)$/m;
my ($held_run) = $out =~ /^run=(\d+)$/m;
$in .= "SELECT 'cancel=' || bf_cancel($held_run);\n"
  . "SELECT 'rows=' || count(*) FROM batchflow.metric_counter WHERE workflow = 'one';\n";
$h->pump until $out =~ /^rows=(\d+)$/m;
is(($out =~ /^rows=(\d+)$/m)[0], 1,
	'the session counted its cancelled loop into a counter row it now holds');

my $run = $node->safe_psql('postgres', q{SELECT bf_start('one', '{"items": [1, 2]}')});
is($node->safe_psql('postgres', "SELECT bf_wait($run, '20 seconds')"),
	'succeeded', 'a run of the same workflow finished while the session held its row');

$in .= "COMMIT;\n\\q\n";
$h->finish;
is( $node->safe_psql('postgres',
		"SELECT sum(succeeded) || ' ' || sum(skipped) || ' ' || count(*) FROM batchflow.metric_counter WHERE workflow = 'one'"),
	'2 1 2', 'both closes counted, in two rows');
is( $node->safe_psql('postgres',
		"SELECT string_agg(status || ':' || runs, ',' ORDER BY status) FROM (SELECT status, sum(runs) AS runs FROM batchflow.metric_run_counter WHERE workflow = 'one' GROUP BY status) s"),
	'cancelled:1,succeeded:1', 'both runs counted');

# 2. Counts against the item rows.
$node->safe_psql(
	'postgres', q{
SELECT bf_register('mix', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 1,
   "errorStrategy": "retry", "maxRetries": 1, "retryDelayMs": 0,
   "inputSource": {"variable": "items"},
   "children": [{"id": "act", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(($1)::int / 1000.0), 1 / (($1)::int % 7)"}]}]}');
});
my $mix = $node->safe_psql('postgres',
	q{SELECT bf_start('mix', '{"items": [1, 3, 4, 6, 7, 8, 9, 11, 12, 14, 20, 23, 30, 40, 49, 60, 80, 120, 1, 2]}')});
# Scrapes while it runs move the loop's prefix (batchflow._metrics_advance).
my $scrapes = 0;
while ($node->safe_psql('postgres', "SELECT finished_at IS NULL FROM batchflow.run WHERE id = $mix") eq 't')
{
	$node->safe_psql('postgres', 'SELECT count(*) FROM batchflow.metric_items()');
	$scrapes++;
	last if $scrapes > 2000;
}
note("$scrapes scrapes while the run ran");
is($node->safe_psql('postgres', "SELECT bf_wait($mix, '60 seconds')"), 'succeeded', 'the mixed run ended (failed items do not fail a retry loop)');

my $from_items = $node->safe_psql(
	'postgres', q{
WITH it AS (
    SELECT i.status,
           CASE WHEN i.status IN ('succeeded', 'failed') AND i.started_at IS NOT NULL
                THEN greatest(round(extract(epoch FROM i.finished_at - i.started_at) * 1000000), 0)
           END AS us
      FROM batchflow.item i JOIN batchflow.loop l ON l.id = i.loop_ref
     WHERE l.run_id = (SELECT max(id) FROM batchflow.run))
SELECT count(*) FILTER (WHERE status = 'succeeded') || ' ' ||
       count(*) FILTER (WHERE status = 'failed') || ' ' ||
       count(*) FILTER (WHERE status = 'skipped') || ' ' ||
       ((SELECT count(*) FROM batchflow.item_error e WHERE e.run_id = (SELECT max(id) FROM batchflow.run))
        - count(*) FILTER (WHERE status = 'failed')) || ' ' ||
       count(us) || ' ' || round(coalesce(sum(us), 0) / 1000000.0, 4) || ' ' ||
       (SELECT array_agg((SELECT count(*) FROM it WHERE it.us <= b * 1000000) ORDER BY b)
          FROM unnest(batchflow.metric_duration_bounds()) b)::text
  FROM it
});
my $from_counters = $node->safe_psql(
	'postgres', q{
SELECT sum(succeeded) || ' ' || sum(failed) || ' ' || sum(skipped) || ' ' || sum(retried) || ' ' ||
       sum(duration_count) || ' ' || round(sum(duration_sum)::numeric, 4) || ' ' ||
       (SELECT array_agg(t ORDER BY n) FROM (
            SELECT x.n, sum(x.v) AS t
              FROM batchflow.metric_counter c, unnest(c.duration_buckets) WITH ORDINALITY x(v, n)
             WHERE c.workflow = 'mix' GROUP BY x.n) s)::text
  FROM batchflow.metric_counter WHERE workflow = 'mix'
});
note("from the items: $from_items");
like($from_items, qr/^17 3 0 3 20 /, 'the items: 17 succeeded, 3 failed after one retry each');
is($from_counters, $from_items, 'the counters hold exactly the counts of the items');

# The CHECK on metric_counter writes the number of buckets out.
is( $node->safe_psql(
		'postgres', q{
SELECT pg_get_constraintdef(c.oid) = format('CHECK ((cardinality(duration_buckets) = %s))',
                                            cardinality(batchflow.metric_duration_bounds()))
  FROM pg_constraint c
 WHERE c.conrelid = 'batchflow.metric_counter'::regclass AND pg_get_constraintdef(c.oid) LIKE '%duration_buckets%'}),
	't', 'the CHECK on the bucket arrays has the number of histogram bounds');

done_testing();
