# NOTIFY batchflow_progress: a session that LISTENs receives JSON payloads
# (run, loop, completed, failed, total, status, ...) for a run it did not
# start, batched: a 1000-item loop announces its progress far fewer than
# 1000 times, yet every status change is announced and the last payload of
# the loop says completed = total.  A loop with failures announces them.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('progress_notify');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
max_worker_processes = 32
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION batchflow');

# 1000 items of about 5 ms at concurrency 4: a run of a second or two, long
# enough for progress notifications between its first and last item.
$node->safe_psql(
	'postgres', q{
SELECT bf_register('notify_quick', '{"nodes": [
  {"id": "quick", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "items"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.005)"}]}]}');
SELECT bf_register('notify_fail', '{"nodes": [
  {"id": "divide", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"static": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
   "errorStrategy": "continue",
   "children": [{"id": "div", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / ((($1)::int) % 4)"}]}]}');
});

# The listener: a psql session reading commands from a pipe.  psql prints
# the notifications it received after each command it runs.
my ($in, $out, $err) = ('', '', '');
my $listener = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
$in .= "LISTEN batchflow_progress;\nSELECT 'listening';\n";
$listener->pump until $out =~ /listening/;

my $run = $node->safe_psql('postgres',
	q{SELECT bf_start('notify_quick', jsonb_build_object('items',
	    (SELECT jsonb_agg(g) FROM generate_series(1, 1000) g)))});
is($node->safe_psql('postgres', "SELECT bf_wait($run, '2 minutes')"),
	'succeeded', 'the 1000-item run succeeded');
my $fail_run = $node->safe_psql('postgres', q{SELECT bf_start('notify_fail')});
is($node->safe_psql('postgres', "SELECT bf_wait($fail_run, '2 minutes')"),
	'succeeded', 'the run with failures ended');

$in .= "SELECT 'end';\n\\q\n";
$listener->finish;
is($listener->result(0), 0, 'the listener exited cleanly') or diag($err);

# Parse every notification.
my @payloads;
my $bad = 0;
for my $line (split /\n/, $out)
{
	next unless $line =~ /^Asynchronous notification "batchflow_progress" with payload "(.*)" received from server process with PID \d+\.$/;
	my $p = eval { decode_json($1) };
	if (ref $p ne 'HASH') { $bad++; diag("not JSON: $1"); next; }
	push @payloads, $p;
}
is($bad, 0, 'every payload is valid JSON');
my @missing = grep {
	my $p = $_;
	grep { !exists $p->{$_} } qw(run loop completed failed total status)
} @payloads;
is(scalar(@missing), 0, 'every payload has run, loop, completed, failed, total and status');

# The 1000-item run.
my @mine = grep { $_->{run} == $run } @payloads;
my @loop = grep { defined $_->{loop} && $_->{loop} eq 'quick' } @mine;
my @runp = grep { !defined $_->{loop} } @mine;
note(scalar(@mine) . " notifications for run $run, " . scalar(@loop) . ' for its loop');
cmp_ok(scalar(@loop), '>=', 2, 'the loop was announced more than once');
cmp_ok(scalar(@mine), '<', 100,
	'far fewer notifications than items (batched): ' . scalar(@mine));

is($loop[0]{status}, 'running', 'first loop payload: running');
is($loop[0]{total}, 1000, 'first loop payload: total 1000');
my @mid = grep { $_->{completed} > 0 && $_->{completed} < 1000 } @loop;
cmp_ok(scalar(@mid), '>=', 1, 'progress announced between the first and the last item');
my $monotone = 1;
for my $i (1 .. $#loop)
{
	$monotone = 0 if $loop[$i]{completed} < $loop[ $i - 1 ]{completed};
}
ok($monotone, 'completed never decreases from one payload to the next');
my $last = $loop[-1];
is($last->{status}, 'succeeded', 'last loop payload: succeeded');
is($last->{completed}, $last->{total}, 'last loop payload: completed = total');
is($last->{completed}, 1000, 'last loop payload: completed = 1000');
is($last->{failed}, 0, 'last loop payload: failed = 0');

# Status changes of the run itself: started running, ended succeeded.
is_deeply([ map { $_->{status} } @runp ], [ 'running', 'succeeded' ],
	'the run announced each of its status changes once');
is($runp[-1]{completed}, 1000, 'the final run payload sums its loops');

# The run with failures: 4 and 8 fail (division by zero).
my @fail = grep { $_->{run} == $fail_run && defined $_->{loop} } @payloads;
my $flast = $fail[-1];
is_deeply(
	[ @$flast{qw(status total completed failed)} ],
	[ 'succeeded', 10, 8, 2 ],
	'the last payload of the loop with failures counts them');

$node->stop;
done_testing();
