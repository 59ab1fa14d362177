# The Prometheus exporter setup of docs/monitoring.md: the real
# prometheus-postgres-exporter, with docs/prometheus-queries.yaml, against
# a cluster that has a finished run with failures and a stalled running
# run; its /metrics on 127.0.0.1 must carry the batchflow metrics with the
# right values.

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
my $dsn = sprintf('host=%s port=%d user=%s dbname=postgres sslmode=disable',
	$node->host, $node->port, scalar getpwuid($<));
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
	if ($res->{success} && $res->{content} =~ /^batchflow_stuck_loops_count/m)
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

# Runs by status.
is(metric('batchflow_runs_count', status => 'succeeded'), '1', 'one run succeeded');
is(metric('batchflow_runs_count', status => 'running'), '1', 'one run running');
is(metric('batchflow_runs_count', status => 'failed'), '0', 'no run failed');

# The finished loop.
my %d = (run_id => $done, workflow => 'exp_done', loop_id => 'divide', status => 'succeeded');
is(metric('batchflow_loop_total', %d), '20', 'finished loop: total 20');
is(metric('batchflow_loop_completed', %d), '15', 'finished loop: 15 completed');
is(metric('batchflow_loop_failed', %d), '5', 'finished loop: 5 failed');
is(metric('batchflow_loop_percent', %d), '100', 'finished loop: 100 %');
is(metric('batchflow_loop_active', %d), '0', 'finished loop: nothing active');
is(metric('batchflow_loop_eta_seconds', %d), '0', 'finished loop: ETA 0');
is(metric('batchflow_loop_timed_items', %d), '20', 'finished loop: 20 timed items');
my $rate = metric('batchflow_loop_items_per_sec', %d);
ok($rate >= 9.0 && $rate <= 11.0, "finished loop: the pace of 10 items/s within 10 % ($rate)");
my ($p50, $p95, $p99, $max) = map { metric("batchflow_loop_${_}_seconds", %d) }
  qw(p50 p95 p99 max);
cmp_ok($p50, '>=', 0.01, "p50 at least the 10 ms sleep ($p50 s)");
ok($p50 <= $p95 && $p95 <= $p99 && $p99 <= $max, 'p50 <= p95 <= p99 <= max');
my $sql_p50 = $node->safe_psql('postgres',
	"SELECT p50_ms / 1000.0 FROM batchflow.loop_stats WHERE run_id = $done");
cmp_ok(abs($p50 - $sql_p50), '<', 1e-6, 'p50 is batchflow.loop_stats\' p50');

# The stuck loop.
my %s = (run_id => $stuck, workflow => 'exp_stuck', loop_id => 'slow', status => 'running');
is(metric('batchflow_loop_active', %s), '1', 'stuck loop: one item executing');
is(metric('batchflow_loop_completed', %s), '2', 'stuck loop: two items done');
is(metric('batchflow_active_items'), '1', 'one item executing in all');
is(metric('batchflow_stuck_loops_count'), '1', 'one stuck loop');
cmp_ok(metric('batchflow_stuck_idle_seconds', run_id => $stuck, reason => 'stalled'),
	'>=', 2, 'stalled for 2 s or more');
cmp_ok(metric('batchflow_stuck_longest_item_seconds', run_id => $stuck),
	'>=', 2, 'its third item runs for 2 s or more');

$h->kill_kill;
$node->safe_psql('postgres', "SELECT bf_cancel($stuck)");
$node->stop('fast');
done_testing();
