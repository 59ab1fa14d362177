# The cardinality rule and the counters, through the real exporter.
#
# - The number of batchflow series the exporter serves is the same after
#   1,000 more finished runs: series are per workflow and loop, never per
#   run (the counts before and after are printed).
# - The counters grow by exactly what those runs did (items succeeded,
#   failed, retried; the histogram's count; runs finished).
# - They stay exactly the same when the history retention deletes the
#   items of those runs, after a clean restart and after a crash: rate()
#   sees no reset.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $exporter = '/usr/bin/prometheus-postgres-exporter';
plan skip_all => "$exporter is not installed" unless -x $exporter;
my $queries = "$FindBin::RealBin/../../docs/prometheus-queries.yaml";

my $node = PostgreSQL::Test::Cluster->new('metrics_cardinality');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
batchflow.history_retention = 0
max_worker_processes = 32
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION batchflow;
CREATE ROLE prometheus LOGIN;
GRANT pg_monitor TO prometheus;
GRANT USAGE ON SCHEMA batchflow TO prometheus;
SELECT bf_register('tiny', '{"nodes": [
  {"id": "pass", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"static": [1, 2, 3]},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_register('flaky', '{"nodes": [
  {"id": "call", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "errorStrategy": "retry", "maxRetries": 1, "retryDelayMs": 0,
   "inputSource": {"static": [1, 0]},
   "children": [{"id": "div", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / ($1)::int"}]}]}');
});

# Start n runs of each workflow and wait until every run has finished.
sub run_batch
{
	my ($n) = @_;
	$node->safe_psql('postgres', "SELECT bf_start(w) FROM generate_series(1, $n), unnest(ARRAY['tiny', 'flaky']) w");
	ok( $node->poll_query_until('postgres',
			'SELECT count(*) = 0 FROM batchflow.run WHERE finished_at IS NULL', 't'),
		"$n runs of each workflow finished");
}

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = sprintf('host=%s port=%d user=prometheus dbname=postgres sslmode=disable',
	$node->host, $node->port);
my $out = '';
my $h;
END { $h->kill_kill if defined $h; }
$h = IPC::Run::start(
	[ $exporter, "--extend.query-path=$queries", "--web.listen-address=127.0.0.1:$port" ],
	'<', \undef, '>&', \$out,
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn; });
my $http = HTTP::Tiny->new(timeout => 30);

# The batchflow samples of one scrape: { "name{labels}" => value }.
sub scrape
{
	for (my $i = 0; $i < 10 * $PostgreSQL::Test::Utils::timeout_default; $i++)
	{
		my $res = $http->get("http://127.0.0.1:$port/metrics");
		if ($res->{success} && $res->{content} =~ /^batchflow_up\b/m)
		{
			my %s = $res->{content} =~ /^(batchflow_\S+)\s+(\S+)$/mg;
			return \%s;
		}
		usleep(200_000);
	}
	diag("exporter output:\n$out");
	die 'the exporter served no batchflow metrics';
}

# The counters, without the gauges (worker memory and pool change alone).
sub counters
{
	my ($s) = @_;
	return { map { $_ => $s->{$_} } grep { /^batchflow_(items|runs_finished)_/ } keys %$s };
}

sub value
{
	my ($s, $name, $wf) = @_;
	my @k = grep { /^\Q$name\E\{/ && /workflow="$wf"/ } keys %$s;
	die "no $name for $wf" unless @k == 1;
	return $s->{ $k[0] };
}

run_batch(10);
my $before = scrape();
my $n_before = scalar(keys %$before);
my @run_ids = grep { /run_id=/ } keys %$before;
is(scalar(@run_ids), 0, 'no series has a run_id once the runs have finished');

run_batch(500);
my $after = scrape();
my $n_after = scalar(keys %$after);
note("batchflow series: $n_before after 20 runs, $n_after after 1,020 runs");
diag("batchflow series: $n_before after 20 finished runs, $n_after after 1,020 finished runs");
is($n_after, $n_before, "the same $n_before series after 1,000 more finished runs");
is_deeply([ sort keys %$after ], [ sort keys %$before ], '... with the same names and labels');

# The counters grew by what the 1,000 runs did.
for my $c (
	[ 'batchflow_items_succeeded_total', 'tiny', 1500 ],
	[ 'batchflow_items_succeeded_total', 'flaky', 500 ],
	[ 'batchflow_items_failed_total', 'flaky', 500 ],
	[ 'batchflow_items_retried_total', 'flaky', 500 ],
	[ 'batchflow_items_duration_seconds_count', 'tiny', 1500 ],
	[ 'batchflow_items_duration_seconds_count', 'flaky', 1000 ],
	[ 'batchflow_runs_finished_total', 'tiny', 500 ],
	[ 'batchflow_runs_finished_total', 'flaky', 500 ])
{
	my ($name, $wf, $want) = @$c;
	is(value($after, $name, $wf) - value($before, $name, $wf), $want, "$name of $wf grew by $want");
}
is(value($after, 'batchflow_items_succeeded_total', 'tiny'), 1530, 'tiny: 1,530 items succeeded in all');

# Pruning deletes every item of those runs: the counters stay.
$node->safe_psql('postgres', "ALTER SYSTEM SET batchflow.history_retention = 1; SELECT pg_reload_conf()");
ok( $node->poll_query_until('postgres',
		'SELECT count(*) = 0 FROM batchflow.item', 't'),
	'the history retention deleted every item');
my $pruned = scrape();
is_deeply(counters($pruned), counters($after), 'every counter the same after pruning');

# A clean restart, then a crash: the counters stay.
$h->kill_kill;
$node->restart;
$h = IPC::Run::start(
	[ $exporter, "--extend.query-path=$queries", "--web.listen-address=127.0.0.1:$port" ],
	'<', \undef, '>&', \$out,
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn; });
is_deeply(counters(scrape()), counters($after), 'every counter the same after a restart');
$node->stop('immediate');
$node->start;
is_deeply(counters(scrape()), counters($after), 'every counter the same after a crash');

$h->kill_kill;
$node->stop('fast');
done_testing();
