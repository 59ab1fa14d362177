# NOTIFY batchflow_progress: a session that LISTENs receives JSON payloads
# (run, loop, completed, failed, total, status, ...) for a run it did not
# start, batched: a 1000-item loop announces its progress far fewer than
# 1000 times, yet every status change is announced and the last payload of
# the loop says completed = total.  A loop with failures announces them.
#
# No payload counts an item twice (as ended and as active, which the
# payloads computed in the worker's own transaction used to do) and none
# repeats the previous one: a one-item loop that fails sends exactly one
# "failed" payload.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('progress_notify');

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
SELECT bf_register('notify_one_fails', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [1]},
   "children": [{"id": "x", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / (($1)::int - 1)"}]}]}');
SELECT bf_register('notify_first_fails', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [1, 2]},
   "children": [{"id": "x", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / (($1)::int - 1)"}]}]}');
SELECT bf_register('notify_each', '{"nodes": [
  {"id": "slow", "type": "loop", "loopType": "sequential",
   "inputSource": {"static": [1, 2, 3]},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.05)"}]}]}');
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
# The loop with failures, 30 times: an idle worker's progress write whose
# snapshot still saw the loop running could commit after the close and
# deliver a 'running' payload last (4 of 60 such loops did).
my @fail_runs;
for (1 .. 30)
{
	my $r = $node->safe_psql('postgres', q{SELECT bf_start('notify_fail')});
	$node->safe_psql('postgres', "SELECT bf_wait($r, '2 minutes')");
	push @fail_runs, $r;
}
my $fail_run = $fail_runs[0];
is( $node->safe_psql(
		'postgres',
		'SELECT string_agg(DISTINCT status, \',\') FROM batchflow.run WHERE id IN (' . join(',', @fail_runs) . ')'),
	'succeeded', 'the 30 runs with failures ended');

my $one_run = $node->safe_psql('postgres', q{SELECT bf_start('notify_one_fails')});
is($node->safe_psql('postgres', "SELECT bf_wait($one_run, '2 minutes')"),
	'failed', 'the one-item loop failed');
my $first_run = $node->safe_psql('postgres', q{SELECT bf_start('notify_first_fails')});
is($node->safe_psql('postgres', "SELECT bf_wait($first_run, '2 minutes')"),
	'failed', 'the two-item loop failed at its first item');

# Every item writes its counts and announces them, in a transaction of its
# own: the payloads sent from the item's own transaction.
$node->safe_psql(
	'postgres', q{
ALTER SYSTEM SET batchflow.progress_batch_items = 1;
ALTER SYSTEM SET batchflow.progress_interval = '10ms';
ALTER SYSTEM SET batchflow.batch_time = 0;
SELECT pg_reload_conf();
});
sleep(1);    # the idle workers reload their configuration when signalled
my $each_run = $node->safe_psql('postgres', q{SELECT bf_start('notify_each')});
is($node->safe_psql('postgres', "SELECT bf_wait($each_run, '2 minutes')"),
	'succeeded', 'the three-item loop announcing every item succeeded');

# bf_wait returns at the commit that finished the run; the notifications
# of that commit may reach the listener a moment later.
$in .= "SELECT pg_sleep(0.5);\nSELECT 'end';\n\\q\n";
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

# The runs with failures: 4 and 8 fail (division by zero).  The last
# payload of each loop is its close's.
my @fail = grep { $_->{run} == $fail_run && defined $_->{loop} } @payloads;
my $flast = $fail[-1];
is_deeply(
	[ @$flast{qw(status total completed failed)} ],
	[ 'succeeded', 10, 8, 2 ],
	'the last payload of the loop with failures counts them');
my %flast;
for my $p (@payloads)
{
	$flast{ $p->{run} } = join('|', @$p{qw(status total completed failed)})
	  if defined $p->{loop} && grep { $_ == $p->{run} } @fail_runs;
}
my @late = grep { ($flast{$_} // '') ne 'succeeded|10|8|2' } @fail_runs;
is(scalar(@late), 0, 'the last payload of each of the 30 loops with failures is its close')
  or diag(join("\n", map { "run $_: " . ($flast{$_} // 'none') } @late));

# No payload counts an item both as ended and as still executing.
my @over = grep {
	defined $_->{loop}
	  && $_->{completed} + $_->{failed} + $_->{skipped} + $_->{active} > $_->{total}
} @payloads;
is(scalar(@over), 0, 'no loop payload counts more ended and active items than the loop has')
  or diag(explain(\@over));

# The payloads of one run, in the order they arrived, as comparable lists.
sub run_payloads
{
	my ($r) = @_;
	return [
		map {
			defined $_->{loop}
			  ? [ @$_{qw(kind loop status total completed failed skipped)}, sprintf('%.1f', $_->{percent}), $_->{active} ]
			  : [ @$_{qw(kind status total completed failed skipped)} ]
		} grep { $_->{run} == $r } @payloads ];
}

# A one-item loop whose item fails: one "failed" payload, counting the item
# once, and the run's.
is_deeply(
	run_payloads($one_run),
	[
		[ 'run', 'running', 0, 0, 0, 0 ],
		[ 'loop', 'each', 'running', 1, 0, 0, 0, '0.0', 0 ],
		[ 'loop', 'each', 'failed', 1, 0, 1, 0, '100.0', 0 ],
		[ 'run', 'failed', 1, 0, 1, 0 ],
	],
	'a failing one-item loop: exactly one failed payload, the item counted once'
) or diag(explain(run_payloads($one_run)));

# Two items, the first fails: the status change is announced by the
# worker's transaction (the failed item not counted as active), then the
# close with the second item skipped.
is_deeply(
	run_payloads($first_run),
	[
		[ 'run', 'running', 0, 0, 0, 0 ],
		[ 'loop', 'each', 'running', 2, 0, 0, 0, '0.0', 0 ],
		[ 'loop', 'each', 'failed', 2, 0, 1, 0, '50.0', 0 ],
		[ 'loop', 'each', 'failed', 2, 0, 1, 1, '100.0', 0 ],
		[ 'run', 'failed', 2, 0, 1, 1 ],
	],
	'fail-fast at the first of two items: status change, then close'
) or diag(explain(run_payloads($first_run)));

# A sequential loop announcing each item from the item's transaction: the
# item just done is counted as completed, and nothing as active.  The last
# item's transaction also closes the loop (nothing else is left), so its
# payload is the close's 'succeeded', not a 'running' at 100 % first.
is_deeply(
	run_payloads($each_run),
	[
		[ 'run', 'running', 0, 0, 0, 0 ],
		[ 'loop', 'slow', 'running', 3, 0, 0, 0, '0.0', 0 ],
		[ 'loop', 'slow', 'running', 3, 1, 0, 0, '33.3', 0 ],
		[ 'loop', 'slow', 'running', 3, 2, 0, 0, '66.7', 0 ],
		[ 'loop', 'slow', 'succeeded', 3, 3, 0, 0, '100.0', 0 ],
		[ 'run', 'succeeded', 3, 3, 0, 0 ],
	],
	'every item announced from its own transaction, counted once'
) or diag(explain(run_payloads($each_run)));

$node->stop;
done_testing();
