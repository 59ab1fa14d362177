# The Prometheus exporter setup of docs/monitoring.md: the real
# prometheus-postgres-exporter, with docs/prometheus-queries.yaml, connected
# as a role that is only a member of pg_monitor, against a cluster that has
# a finished run with failures and a stalled running run; its /metrics on
# 127.0.0.1 must carry the batchflow metrics with the right values, and
# labels that never name a finished run.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $exporter = '/usr/bin/prometheus-postgres-exporter';
plan skip_all => "$exporter is not installed" unless -x $exporter;

my $queries = "$FindBin::RealBin/../../docs/prometheus-queries.yaml";
ok(-f $queries, 'docs/prometheus-queries.yaml exists');

my $node = crash_node('progress_exporter', "batchflow.stalled_after = '2s'\n");

# A finished run: 20 items, 5 of them (multiples of 4) failing, continue.
# Item i ends at t0 + (i + 1) x 100 ms (failing ones sooner): a known pace
# of 10 items/s, so the loop's rate over its 2.1 s is 9.5 items/s.
$node->safe_psql(
	'postgres', q{
SELECT bf_register('exp_done', '{"nodes": [
  {"id": "divide", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "items"}, "errorStrategy": "continue",
   "children": [{"id": "div", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / (($1)::int % 4) FROM pg_sleep(0.01 + greatest(0, extract(epoch FROM ($3->''vars''->>''t0'')::timestamptz + ($2 + 1) * interval ''100 ms'' - clock_timestamp())))"}]}]}');
SELECT bf_register('exp_stuck', '{"nodes": [
  {"id": "slow", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [0.01, 0.01, 600]},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(($1)::float8)"}]}]}');
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) >= 3 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'the workers are up before the paced run starts');
my $done = $node->safe_psql('postgres',
	q{SELECT bf_start('exp_done', jsonb_build_object('t0', clock_timestamp() + interval '0.1 seconds',
	    'items', (SELECT jsonb_agg(g) FROM generate_series(1, 20) g)))});
is($node->safe_psql('postgres', "SELECT bf_wait($done, '1 minute')"),
	'succeeded', 'the run with failures finished');

# A run stuck in its third item (600 s), stalled after 2 s.
my $stuck = $node->safe_psql('postgres', q{SELECT bf_start('exp_stuck')});
ok( $node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM batchflow.stuck_runs WHERE run_id = $stuck AND reason = 'stalled')"),
	'the second run is listed as stalled');

# Start the exporter on a free port of 127.0.0.1.
my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($out, $err) = ('', '');
$node->safe_psql('postgres', q{
CREATE ROLE prometheus LOGIN;
GRANT pg_monitor TO prometheus;
GRANT USAGE ON SCHEMA batchflow TO prometheus;
});
my $dsn = sprintf('host=%s port=%d user=prometheus dbname=postgres sslmode=disable',
	$node->host, $node->port);
my $h;
END { $h->kill_kill if defined $h; }
$h = IPC::Run::start(
	[ $exporter, "--extend.query-path=$queries",
	  "--web.listen-address=127.0.0.1:$port" ],
	'<', \undef, '>', \$out, '2>', \$err,
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn; });

# Fetch /metrics once the exporter answers and has read batchflow.
my $http = HTTP::Tiny->new(timeout => 10);
my $body = '';
for (my $i = 0; $i < 10 * $PostgreSQL::Test::Utils::timeout_default; $i++)
{
	my $res = $http->get("http://127.0.0.1:$port/metrics");
	if ($res->{success} && $res->{content} =~ /^batchflow_queue_stalled_loops/m)
	{
		$body = $res->{content};
		last;
	}
	usleep(100_000);
}
isnt($body, '', 'the exporter serves /metrics with batchflow metrics')
  or diag("exporter output:\n$out\n$err");

# name{labels} value -> [ { name, labels => {...}, value } ]
my @samples;
for my $line (split /\n/, $body)
{
	next if $line =~ /^#/;
	next unless $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/;
	my ($name, $labels, $value) = ($1, $2 // '', $3);
	my %l = $labels =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
	push @samples, { name => $name, labels => \%l, value => $value };
}

# The value of metric $name whose labels include %want (undef if none).
sub metric
{
	my ($name, %want) = @_;
	for my $s (@samples)
	{
		next unless $s->{name} eq $name;
		next if grep { ($s->{labels}{$_} // '') ne $want{$_} } keys %want;
		return $s->{value};
	}
	return undef;
}

is(metric('pg_up'), '1', 'the exporter reaches the database');
is(metric('pg_exporter_user_queries_load_error'), '0', 'the queries file loads');
is(metric('pg_exporter_last_scrape_error'), '0', 'every query of the file runs as a pg_monitor member');
is(metric('batchflow_up'), '1', 'batchflow_up');
is(metric('batchflow_stalled_after_seconds'), '2', 'batchflow.stalled_after, in seconds');

# The finished run: counters per workflow and loop.
my %d = (workflow => 'exp_done', loop_id => 'divide');
is(metric('batchflow_items_succeeded_total', %d), '15', 'finished loop: 15 succeeded');
is(metric('batchflow_items_failed_total', %d), '5', 'finished loop: 5 failed');
is(metric('batchflow_items_skipped_total', %d), '0', 'finished loop: none skipped');
is(metric('batchflow_items_retried_total', %d), '0', 'finished loop: no retry (continue)');
is(metric('batchflow_runs_finished_total', workflow => 'exp_done', status => 'succeeded'), '1',
	'one run of exp_done succeeded');

# Its item durations, as a histogram with fixed buckets.
is(metric('batchflow_items_duration_seconds_count', %d), '20', 'histogram: 20 items timed');
is(metric('batchflow_items_duration_seconds_bucket', %d, le => '+Inf'), '20', 'histogram: +Inf bucket 20');
cmp_ok(metric('batchflow_items_duration_seconds_bucket', %d, le => '0.005'), '<=', 5,
	'histogram: only the failed items (which may fail before the sleep) under 5 ms');
cmp_ok(metric('batchflow_items_duration_seconds_bucket', %d, le => '1'), '==', 20,
	'histogram: every item under a second');
my $sum = metric('batchflow_items_duration_seconds_sum', %d);
cmp_ok($sum, '>=', 0.15, "histogram: sum at least the 15 succeeded items x 10 ms ($sum s)");
my $sql_sum = $node->safe_psql('postgres',
	"SELECT sum(extract(epoch FROM duration)) FROM batchflow.items WHERE run_id = $done");
cmp_ok(abs($sum - $sql_sum), '<', 1e-5, "histogram: sum is that of batchflow.items ($sql_sum s)");
my @le = qw(0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 300 1800);
my @buckets = map { metric('batchflow_items_duration_seconds_bucket', %d, le => $_) } @le;
is(scalar(grep { defined } @buckets), 15, 'histogram: 15 buckets and +Inf');
ok(!grep({ $buckets[$_] < $buckets[ $_ - 1 ] } 1 .. $#buckets), 'histogram: cumulative');
my $sql_buckets = $node->safe_psql('postgres', qq{
SELECT string_agg((SELECT count(*) FROM batchflow.items i
                    WHERE i.run_id = $done AND i.duration <= make_interval(secs => b))::text, ',' ORDER BY b)
  FROM unnest(ARRAY[@{[ join ',', @le ]}]::float8[]) b});
is(join(',', @buckets), $sql_buckets, 'histogram: each bucket counts the items at most that long');

# The stuck run: gauges of its open loop, per workflow and loop.
my %s = (workflow => 'exp_stuck', loop_id => 'slow');
is(metric('batchflow_items_succeeded_total', %s), '2', 'open loop: its 2 ended items count');
is(metric('batchflow_items_duration_seconds_count', %s), '2', 'open loop: the 2 items below the executing one are timed');
is(metric('batchflow_queue_open_loops', %s), '1', 'open loop: one');
is(metric('batchflow_queue_stalled_loops', %s), '1', 'open loop: stalled');
is(metric('batchflow_queue_active_items', %s), '1', 'open loop: one item executing');
is(metric('batchflow_queue_pending_items', %s), '0', 'open loop: nothing waiting');
cmp_ok(metric('batchflow_queue_idle_seconds', %s), '>=', 2, 'open loop: idle for 2 s or more');
is(metric('batchflow_loops_open', workflow => 'exp_stuck', status => 'running'), '1', 'one loop running');
is(metric('batchflow_runs_active', workflow => 'exp_stuck', status => 'running'), '1', 'one run running');

# The worker pool and its memory.
is(metric('batchflow_workers_max'), '10', 'pool: batchflow.max_workers slots');
cmp_ok(metric('batchflow_workers_busy'), '>=', 1, 'pool: a worker busy');
my @private = grep { $_->{name} eq 'batchflow_worker_private_bytes' } @samples;
cmp_ok(scalar(@private), '>=', 1, 'memory: read for the running workers');
ok(!grep({ $_->{value} <= 0 } @private), 'memory: every private size positive');
ok( !grep({ $_->{value} > metric('batchflow_worker_resident_bytes', slot => $_->{labels}{slot}) } @private),
	'memory: private at most resident');

# Per-run detail: the running run only.
my %r = (run_id => $stuck, workflow => 'exp_stuck', loop_id => 'slow');
is(metric('batchflow_running_loop_remaining_items', %r), '1', 'running loop: one item left');
is(metric('batchflow_running_loop_active_items', %r), '1', 'running loop: one executing');
my @with_run = grep { exists $_->{labels}{run_id} } @samples;
ok(!grep({ $_->{name} !~ /^batchflow_running_loop_/ } @with_run),
	'only batchflow_running_loop_* has a run_id label');
ok(!grep({ $_->{labels}{run_id} eq $done } @with_run), 'the finished run has no series');

$h->kill_kill;
$node->safe_psql('postgres', "SELECT bf_cancel($stuck)");
$node->stop('fast');
done_testing();
