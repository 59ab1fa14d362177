# The alert rules (monitoring/batchflow-alerts.yml) and the Grafana
# dashboard (monitoring/grafana-batchflow.json), with the real tools.
#
# 1. promtool check rules, and promtool test rules with the unit tests of
#    monitoring/tests/: every rule fires and does not fire there.  Each
#    rule is then broken three ways in a copy (never fires; fires without
#    its "for" delay; a threshold loosened so that a case meant to stay
#    quiet fires) and the unit tests must fail each time: a test that
#    passed with the rule broken would prove nothing.
# 2. A cluster with a slow run (a sequential loop of 0.8 s items: fewer
#    than 100 items a minute), a stalled loop (an item of 600 s, with
#    batchflow.stalled_after = 5s) and a fast run; the real
#    prometheus-postgres-exporter serves docs/prometheus-queries.yaml on
#    127.0.0.1.  Two real scrapes, some seconds apart, become the input
#    series of a promtool test: Prometheus scraping every minute while the
#    state lasts, i.e. each counter going on at the rate observed between
#    the two scrapes and each gauge staying as scraped.  At 10 minutes
#    BatchflowRunSlow must fire for the slow run and the stalled loop
#    (nothing of it ends) and not for the fast run, BatchflowLoopStalled
#    for the stalled loop only, and no other rule at all.
# 3. A real prometheus on 127.0.0.1 scrapes the exporter every second and
#    evaluates the rules: every rule is healthy, every PromQL expression of
#    the dashboard (valid JSON) runs and returns series, and
#    BatchflowLoopStalled (for: 1m) turns from pending to firing for the
#    stalled loop, within 100 seconds.

use strict;
use warnings;

use File::Copy;
use File::Path qw(make_path);
use FindBin;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $promtool   = '/usr/bin/promtool';
my $prometheus = '/usr/bin/prometheus';
my $exporter   = '/usr/bin/prometheus-postgres-exporter';
for my $tool ($promtool, $prometheus, $exporter)
{
	plan skip_all => "$tool is not installed (scripts/deps.sh installs it)" unless -x $tool;
}

my $root    = "$FindBin::RealBin/../..";
my $rules   = "$root/monitoring/batchflow-alerts.yml";
my $unit    = "$root/monitoring/tests/batchflow-alerts.test.yml";
my $dash    = "$root/monitoring/grafana-batchflow.json";
my $queries = "$root/docs/prometheus-queries.yaml";
my $tmp     = PostgreSQL::Test::Utils::tempdir();

# Run a command; returns (exit code, stdout and stderr together).
sub run_tool
{
	my @cmd = @_;
	my $out = '';
	IPC::Run::run(\@cmd, '<', \undef, '>&', \$out);
	return ($? >> 8, $out);
}

# ---------------------------------------------------------------------------
# 1. The rules and their unit tests.

my ($rc, $out) = run_tool($promtool, 'check', 'rules', $rules);
is($rc, 0, 'promtool check rules passes') or diag($out);
my $rules_text = slurp_file($rules);
my @alerts = $rules_text =~ /^\s*- alert: (\w+)$/mg;
is(scalar(@alerts), 7, 'seven alerting rules: ' . join(', ', @alerts));
like($out, qr/SUCCESS: 8 rules found/, 'promtool finds them and the recording rule');

($rc, $out) = run_tool($promtool, 'test', 'rules', $unit);
is($rc, 0, 'promtool test rules passes') or diag($out);

my $unit_text = slurp_file($unit);
for my $alert (@alerts)
{
	ok($unit_text =~ /alertname: $alert\n\s+exp_alerts:\n\s+- exp_labels/,
		"$alert: a unit test where it fires");
	ok($unit_text =~ /alertname: $alert\n\s+exp_alerts: \[\]/,
		"$alert: a unit test where it does not fire yet");
}

# The rules file with one rule's expr, or its "for", replaced.
sub mutate
{
	my ($alert, $what, $new) = @_;
	my $text = $rules_text;
	my $done;
	if ($what eq 'expr')
	{
		$done = $text =~ s/(- alert: $alert\n\s+expr: )(?:\|\n(?: {10}.*\n)+|.*\n)/$1$new\n/;
	}
	elsif ($what eq 'for')
	{
		$done = $text =~ s/(- alert: $alert\n\s+expr: (?:\|\n(?: {10}.*\n)+|.*\n)\s+for: )\S+/${1}0s/;
	}
	else
	{
		my ($from, $to) = @$new;
		$done = $text =~ s/(- alert: $alert\n(?:(?!\s+- alert:).*\n)*?.*?)\Q$from\E/$1$to/;
	}
	die "cannot mutate $alert ($what)" unless $done;
	return $text;
}

# A threshold or condition of each rule loosened so that one of the cases
# its unit test keeps quiet would fire.
my %loosen = (
	BatchflowRunSlow            => [ '< 100 / 60', '< 1000' ],
	BatchflowLoopStalled        => [ 'batchflow_queue_stalled_loops > 0', 'batchflow_queue_stalled_loops >= 0' ],
	BatchflowFailureRatioHigh   => [ '> 0.05', '> 0.001' ],
	BatchflowRetryStorm         => [ 'rate(batchflow_items_retried_total[5m]) > 1', 'rate(batchflow_items_retried_total[5m]) > 0.1' ],
	BatchflowPoolSaturated      => [ '>= batchflow_workers_max', '>= batchflow_workers_max - 1' ],
	BatchflowWorkerMemoryHigh   => [ '> 1024 * 1024 * 1024', '>= 1024 * 1024 * 1024' ],
	BatchflowExporterCannotRead => [ 'up{job="batchflow"} == 0', 'up{job="batchflow"} >= 0' ]);
is_deeply([ sort keys %loosen ], [ sort @alerts ], 'a loosened threshold for every rule');

make_path("$tmp/mutant/tests");
copy($unit, "$tmp/mutant/tests/batchflow-alerts.test.yml") or die "copy: $!";
for my $alert (@alerts)
{
	for my $m ([ 'never fires', mutate($alert, 'expr', 'vector(1) < 0') ],
		[ 'fires without delay', mutate($alert, 'for') ],
		[ 'loosened', mutate($alert, 'loosen', $loosen{$alert}) ])
	{
		my ($name, $text) = @$m;
		isnt($text, $rules_text, "$alert $name: the copy differs");
		open(my $fh, '>', "$tmp/mutant/batchflow-alerts.yml") or die $!;
		print $fh $text;
		close $fh;
		($rc, $out) = run_tool($promtool, 'check', 'rules', "$tmp/mutant/batchflow-alerts.yml");
		is($rc, 0, "$alert $name: still a valid rule") or diag($out);
		($rc, $out) = run_tool($promtool, 'test', 'rules', "$tmp/mutant/tests/batchflow-alerts.test.yml");
		isnt($rc, 0, "$alert $name: the unit tests fail");
	}
}

# ---------------------------------------------------------------------------
# 2. Real metrics from the real exporter, evaluated by promtool.

my $node = PostgreSQL::Test::Cluster->new('metrics_alerts');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
max_worker_processes = 32
batchflow.stalled_after = '5s'
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION batchflow;
CREATE ROLE prometheus LOGIN;
GRANT pg_monitor TO prometheus;
GRANT USAGE ON SCHEMA batchflow TO prometheus;
SELECT bf_register('slow_import', '{"nodes": [
  {"id": "load", "type": "loop", "loopType": "sequential",
   "inputSource": {"variable": "rows"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.8)"}]}]}');
SELECT bf_register('stuck_nap', '{"nodes": [
  {"id": "slow", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [0.01, 0.01, 600]},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(($1)::float8)"}]}]}');
SELECT bf_register('fast_import', '{"nodes": [
  {"id": "load", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "rows"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.02)"}]}]}');
});
# A run that finished, so that the finished-runs counter has a series.
my $once = $node->safe_psql('postgres', q{
SELECT bf_register('done_once', '{"nodes": [
  {"id": "tick", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"static": [1, 2, 3]},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
SELECT bf_start('done_once');});
($once) = $once =~ /(\d+)$/;
is($node->safe_psql('postgres', "SELECT bf_wait($once, '1 minute')"), 'succeeded', 'done_once finished');
my @runs;
push @runs, $node->safe_psql('postgres',
	q{SELECT bf_start('slow_import', jsonb_build_object('rows', (SELECT jsonb_agg(g) FROM generate_series(1, 2000) g)))});
push @runs, $node->safe_psql('postgres', q{SELECT bf_start('stuck_nap')});
push @runs, $node->safe_psql('postgres',
	q{SELECT bf_start('fast_import', jsonb_build_object('rows', (SELECT jsonb_agg(g) FROM generate_series(1, 50000) g)))});
ok( $node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM batchflow.stuck_runs WHERE workflow = 'stuck_nap' AND reason = 'stalled')"),
	'stuck_nap is stalled');

my $exp_port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = sprintf('host=%s port=%d user=prometheus dbname=postgres sslmode=disable',
	$node->host, $node->port);
my ($exp_out, $prom_out) = ('', '');
my ($exp_h, $prom_h);
END
{
	$prom_h->kill_kill if defined $prom_h;
	$exp_h->kill_kill  if defined $exp_h;
}
$exp_h = IPC::Run::start(
	[ $exporter, "--extend.query-path=$queries", "--web.listen-address=127.0.0.1:$exp_port" ],
	'<', \undef, '>&', \$exp_out,
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn; });

my $http = HTTP::Tiny->new(timeout => 10);

# One scrape: (time, { "name{labels}" => { name, labels, value } }).
sub scrape
{
	for (my $i = 0; $i < 10 * $PostgreSQL::Test::Utils::timeout_default; $i++)
	{
		my $t   = time();
		my $res = $http->get("http://127.0.0.1:$exp_port/metrics");
		if ($res->{success} && $res->{content} =~ /^batchflow_up\b/m)
		{
			my %s;
			for my $line (split /\n/, $res->{content})
			{
				next unless $line =~ /^((?:batchflow_|pg_up\b|pg_exporter_last_scrape_error\b)[a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/;
				my ($name, $labels, $value) = ($1, $2 // '', $3);
				my %l = $labels =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
				$s{"$name\{$labels\}"} = { name => $name, labels => \%l, value => $value };
			}
			return ($t, \%s);
		}
		usleep(100_000);
	}
	diag("exporter output:\n$exp_out");
	die 'the exporter served no batchflow metrics';
}

my ($t0, $s0) = scrape();
sleep 6;
my ($t1, $s1) = scrape();
my $slow_key = (grep { $s1->{$_}{name} eq 'batchflow_items_succeeded_total' && $s1->{$_}{labels}{workflow} eq 'slow_import' } keys %$s1)[0];
my $fast_key = (grep { $s1->{$_}{name} eq 'batchflow_items_succeeded_total' && $s1->{$_}{labels}{workflow} eq 'fast_import' } keys %$s1)[0];
my $slow_rate = ($s1->{$slow_key}{value} - $s0->{$slow_key}{value}) / ($t1 - $t0);
my $fast_rate = ($s1->{$fast_key}{value} - $s0->{$fast_key}{value}) / ($t1 - $t0);
cmp_ok($slow_rate, '<', 100 / 60, sprintf('slow_import ends %.2f items/s between the scrapes', $slow_rate));
cmp_ok($slow_rate, '>', 0, 'slow_import does end items');
cmp_ok($fast_rate, '>', 100 / 60, sprintf('fast_import ends %.1f items/s', $fast_rate));

# The promtool input: one series per scraped series, a sample a minute.
my $instance = "127.0.0.1:$exp_port";
my @series = ({ series => qq{up{instance="$instance",job="batchflow"}}, values => join(' ', (1) x 16) });
for my $key (sort keys %$s1)
{
	my $m = $s1->{$key};
	next if $m->{value} =~ /nan/i;
	my $counter = $m->{name} =~ /_(total|bucket|sum|count)$/;
	my $slope = 0;
	if ($counter && exists $s0->{$key})
	{
		$slope = ($m->{value} - $s0->{$key}{value}) / ($t1 - $t0);
		$slope = 0 if $slope < 0;
	}
	my %l = (%{ $m->{labels} }, instance => $instance, job => 'batchflow');
	my $labels = join(',', map { my $v = $l{$_}; qq{$_="$v"} } sort keys %l);
	push @series, {
		series => "$m->{name}\{$labels\}",
		values => join(' ', map { $m->{value} + $slope * 60 * $_ } 0 .. 15) };
}
cmp_ok(scalar(@series), '>', 20, scalar(@series) . ' input series from the scrape');

# The expected alerts, annotations filled in from the rules file.
sub annotations
{
	my ($alert, %labels) = @_;
	my ($block) = $rules_text =~ /- alert: $alert\n((?:(?!\s+- alert:).*\n)*)/;
	my %a;
	for my $k (qw(summary description))
	{
		my ($t) = $block =~ /^\s+$k: "(.*)"$/m;
		$t =~ s/\{\{ \$labels\.(\w+) \}\}/$labels{$1}/g;
		$a{$k} = $t;
	}
	return \%a;
}

sub expected
{
	my ($alert, $severity, @loops) = @_;
	return [ map {
		my %l = (severity => $severity, instance => $instance, job => 'batchflow',
			server => $node->host . ':' . $node->port, workflow => $_->[0], loop_id => $_->[1]);
		{ exp_labels => \%l, exp_annotations => annotations($alert, %l) }
	} @loops ];
}

my %exp = map { $_ => [] } @alerts;
$exp{BatchflowRunSlow}     = expected('BatchflowRunSlow', 'warning', [ 'slow_import', 'load' ], [ 'stuck_nap', 'slow' ]);
$exp{BatchflowLoopStalled} = expected('BatchflowLoopStalled', 'critical', [ 'stuck_nap', 'slow' ]);
my $test = {
	rule_files          => [$rules],
	evaluation_interval => '1m',
	tests => [ {
		name          => 'scraped from the exporter',
		interval      => '1m',
		input_series  => \@series,
		alert_rule_test => [ map { { eval_time => '10m', alertname => $_, exp_alerts => $exp{$_} } } @alerts ] } ] };
my $test_file = "$tmp/scraped.test.yml";
open(my $fh, '>', $test_file) or die $!;
print $fh JSON::PP->new->canonical->pretty->encode($test);
close $fh;
($rc, $out) = run_tool($promtool, 'test', 'rules', $test_file);
is($rc, 0, 'from the scraped series: BatchflowRunSlow fires for slow_import and stuck_nap, '
	  . 'BatchflowLoopStalled for stuck_nap, nothing else') or diag($out);

# The same input must fail when the fast run is expected slow too: the
# test above does tell firing from not firing.
push @{ $exp{BatchflowRunSlow} }, @{ expected('BatchflowRunSlow', 'warning', [ 'fast_import', 'load' ]) };
open($fh, '>', $test_file) or die $!;
print $fh JSON::PP->new->canonical->pretty->encode($test);
close $fh;
($rc, $out) = run_tool($promtool, 'test', 'rules', $test_file);
isnt($rc, 0, 'promtool says fast_import does not fire BatchflowRunSlow');
like($out, qr/fast_import/, '... naming it');

# ---------------------------------------------------------------------------
# 3. A real prometheus scraping the exporter.

my $prom_port = PostgreSQL::Test::Cluster::get_free_port();
open($fh, '>', "$tmp/prometheus.yml") or die $!;
print $fh <<"EOF";
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $rules
scrape_configs:
  - job_name: batchflow
    static_configs:
      - targets: ['127.0.0.1:$exp_port']
EOF
close $fh;
$prom_h = IPC::Run::start(
	[ $prometheus, "--config.file=$tmp/prometheus.yml", "--storage.tsdb.path=$tmp/tsdb",
	  "--web.listen-address=127.0.0.1:$prom_port" ],
	'<', \undef, '>&', \$prom_out);

# GET a Prometheus API path; the decoded "data", or undef.
sub api
{
	my ($path, %form) = @_;
	my $url = "http://127.0.0.1:$prom_port/api/v1/$path";
	$url .= '?' . $http->www_form_urlencode(\%form) if %form;
	my $res = $http->get($url);
	return undef unless $res->{success};
	my $j = decode_json($res->{content});
	return $j->{status} eq 'success' ? $j->{data} : undef;
}

# Until five scrapes of the exporter are in.
my $scrapes = 0;
for (my $i = 0; $i < 10 * $PostgreSQL::Test::Utils::timeout_default; $i++)
{
	my $d = api('query', query => 'count_over_time(batchflow_up[1m])');
	$scrapes = $d->{result}[0]{value}[1] if $d && @{ $d->{result} };
	last if $scrapes >= 5;
	usleep(200_000);
}
cmp_ok($scrapes, '>=', 5, 'prometheus scraped the exporter five times') or diag($prom_out);

my $groups = api('rules');
my @rules_seen = map { @{ $_->{rules} } } @{ $groups->{groups} // [] };
is(scalar(@rules_seen), 8, 'prometheus loaded the eight rules');
is(join(',', map { "$_->{name}:$_->{health}" } grep { $_->{health} ne 'ok' } @rules_seen), '',
	'every rule evaluates without error');

# The dashboard: valid JSON, and every expression runs on the real series.
my $json = eval { decode_json(slurp_file($dash)) };
ok($json, 'the dashboard is valid JSON') or diag($@);
my @exprs;
my @panels = @{ $json->{panels} };
while (my $p = shift @panels)
{
	push @panels, @{ $p->{panels} // [] };
	push @exprs, map { [ $p->{title}, $_->{expr} ] } grep { defined $_->{expr} } @{ $p->{targets} // [] };
}
cmp_ok(scalar(@exprs), '>=', 15, scalar(@exprs) . ' PromQL expressions in the dashboard');
for my $title ('Runs by status', 'Items/s per workflow', 'p50 item duration', 'p95 item duration',
	'p99 item duration', 'Pool utilisation', 'Failed items/s')
{
	ok((grep { $_->[0] eq $title } @exprs), "the dashboard has a panel '$title'");
}
for my $e (@exprs)
{
	my ($title, $expr) = @$e;
	(my $q = $expr) =~ s/\$__rate_interval/1m/g;
	$q =~ s/\$workflow/.*/g;
	my $d = api('query', query => $q);
	ok($d && @{ $d->{result} }, "dashboard '$title': $expr returns series")
	  or diag(explain($d));
}
for my $v (@{ $json->{templating}{list} })
{
	my ($metric) = $v->{definition} =~ /label_values\((\w+), *\w+\)/;
	my $d = api('series', 'match[]' => $metric);
	ok($d && @$d, "dashboard variable \$$v->{name}: $metric has series");
}

# BatchflowLoopStalled (for: 1m) turns firing in the real prometheus.
my ($state, %states) = ('');
my $deadline = time() + 100;
while (time() < $deadline)
{
	my $d = api('alerts');
	for my $a (@{ $d->{alerts} // [] })
	{
		next unless $a->{labels}{alertname} eq 'BatchflowLoopStalled';
		$state = $a->{state};
		$states{ "$a->{labels}{workflow}:$a->{state}" } = 1;
	}
	last if $state eq 'firing';
	sleep 1;
}
ok($states{'stuck_nap:pending'} || $state eq 'firing', 'BatchflowLoopStalled was pending for stuck_nap');
is($state, 'firing', 'BatchflowLoopStalled fires in prometheus within 100 s')
  or diag(explain(api('query', query => 'max_over_time(scrape_duration_seconds[2m])')),
	explain(api('query', query => 'min_over_time(up[2m])')),
	explain(api('query', query => 'count_over_time(batchflow_queue_stalled_loops[2m])')), $prom_out);
is(join(',', grep { !/^stuck_nap:/ } sort keys %states), '', 'for stuck_nap only');

$prom_h->kill_kill;
$exp_h->kill_kill;
$node->safe_psql('postgres', "SELECT bf_cancel(r) FROM unnest(ARRAY[" . join(',', @runs) . "]::bigint[]) r");
$node->stop('fast');
done_testing();
