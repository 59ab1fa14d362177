# NOTIFY batchflow_progress is sent after the commit by one announcer per
# database (src/announce.c, src/announcer.c), not by the transaction that
# made the change (which held PostgreSQL's notify lock through its commit).
#
# A transaction that finds the notify lock free (no other commit is
# notifying) still notifies itself at once; only under contention are its
# payloads queued for the announcer.  batchflow.debug_announce_queued
# makes every transaction queue when an announcer runs, so that what the
# announcer does can be checked deterministically.
#
# Checked here: an uncontended bf_start notifies from its own session;
# under concurrent bf_start load, every payload comes from the announcer
# (queueing forced) and every run's payloads arrive in causal order (the
# run's 'running' first, its loop's 'running' before the loop's close,
# nothing after the run's final payload), none lost, also with the
# uncontended path mixed in (not forced); a rolled-back
# bf_start (or one in a rolled-back savepoint) announces nothing;
# PREPARE TRANSACTION is refused after bf_start, as for any NOTIFY; with
# the announcer terminated, the next transaction notifies for itself and
# a new announcer takes over, also when it is terminated in the middle of
# the load; after a crash, payloads still arrive; a database that no
# worker serves (a template) notifies from the session itself; and DROP
# DATABASE does not wait for the database's announcer.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node(
	'progress_announcer', q{
batchflow.database_name = ''
max_prepared_transactions = 2
restart_after_crash = on
});

$node->safe_psql(
	'postgres', q{
SELECT bf_register('ann_three', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"static": [1, 2, 3]},
   "children": [{"id": "x", "type": "activity", "activity": "sql",
                 "sql": "SELECT ($1)::int"}]}]}');
});

# A psql session listening on batchflow_progress in $db.
sub listener
{
	my ($db) = @_;
	my %l = (in => '', out => '', err => '');
	$l{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr($db) ],
		'<', \$l{in}, '>', \$l{out}, '2>', \$l{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$l{in} .= "LISTEN batchflow_progress;\nSELECT 'listening';\n";
	$l{h}->pump until $l{out} =~ /listening/;
	return \%l;
}

# Stop a listener (after half a second more) and return its payloads, each
# with the PID of the process that sent it.
sub payloads
{
	my ($l) = @_;
	$l->{in} .= "SELECT pg_sleep(0.5);\n\\q\n";
	$l->{h}->finish;
	my @p;
	for my $line (split /\n/, $l->{out})
	{
		next
		  unless $line =~
		  /^Asynchronous notification "batchflow_progress" with payload "(.*)" received from server process with PID (\d+)\.$/;
		my $p = decode_json($1);
		$p->{pid} = $2;
		push @p, $p;
	}
	return @p;
}

# The announcer's pid in $db, once there is one (empty if none came).
sub announcer_pid
{
	my ($db) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'batchflow announcer' AND datname = '$db'"
	) or return '';
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow announcer' AND datname = '$db'");
}

sub wait_runs_done
{
	$node->poll_query_until('postgres',
		'SELECT count(*) = 0 FROM batchflow.run WHERE finished_at IS NULL')
	  or diag('runs still unfinished');
}

# What is wrong with the payloads of each run in ($from, $to]: each run
# announces 'running' first and 'succeeded' last, once each; its loop
# 'running' (total 3) before its close, which says succeeded with 3
# completed and is the loop's last payload.
sub order_problems
{
	my ($payloads, $from, $to) = @_;
	my %by_run;
	push @{ $by_run{ $_->{run} } }, $_ for @$payloads;
	my @bad;
	for my $r ($from + 1 .. $to)
	{
		my @p = @{ $by_run{$r} // [] };
		my @run = map { $_->{status} } grep { !defined $_->{loop} } @p;
		my @loop = grep { defined $_->{loop} } @p;
		my $why;
		if (!@p) { $why = 'no payload' }
		elsif (defined $p[0]{loop} || $p[0]{status} ne 'running') { $why = 'first payload is not the run running' }
		elsif (join(',', @run) ne 'running,succeeded') { $why = 'run statuses ' . join(',', @run) }
		elsif (defined $p[-1]{loop}) { $why = 'a loop payload after the run ended' }
		elsif (!@loop || $loop[0]{status} ne 'running' || $loop[0]{total} != 3) { $why = 'loop not announced running first' }
		elsif ($loop[-1]{status} ne 'succeeded' || $loop[-1]{completed} != 3) { $why = 'last loop payload is not its close' }
		elsif (grep { $_->{status} eq 'succeeded' } @loop[ 0 .. $#loop - 1 ]) { $why = 'loop closed twice' }
		push @bad, "run $r: $why" if $why;
	}
	return @bad;
}

# 1. Uncontended: the session notifies from its own transaction.
my $l = listener('postgres');
my ($me0, $first) = split /\|/, $node->safe_psql('postgres', q{SELECT pg_backend_pid(), bf_start('ann_three')});
is($node->safe_psql('postgres', "SELECT bf_wait($first, '1 minute')"), 'succeeded', 'first run succeeded');

# From here on, queue whenever an announcer runs.  The next announcing
# transaction finds none, notifies itself and starts one.
$node->safe_psql('postgres', q{ALTER SYSTEM SET batchflow.debug_announce_queued = on; SELECT pg_reload_conf();});
sleep(1);    # the idle workers reload their configuration when signalled
my $warm = $node->safe_psql('postgres', q{SELECT bf_start('ann_three')});
$node->safe_psql('postgres', "SELECT bf_wait($warm, '1 minute')");
my $ann = announcer_pid('postgres');
ok($ann ne '', "an announcer runs in database postgres (pid $ann)");

# 2. Concurrent bf_start load: 4 clients, 150 runs each.
my $r0 = $node->safe_psql('postgres', 'SELECT max(id) FROM batchflow.run');
my $script = $node->basedir . '/start.sql';
PostgreSQL::Test::Utils::append_to_file($script, "SELECT bf_start('ann_three');\n");
$node->command_ok([ 'pgbench', '-n', '-c', '4', '-j', '2', '-t', '150', '-f', $script,
		'-d', $node->connstr('postgres') ], 'pgbench: 600 bf_start from 4 clients');
wait_runs_done();
my $r1 = $node->safe_psql('postgres', 'SELECT max(id) FROM batchflow.run');
is($r1 - $r0, 600, '600 runs started');
is($node->safe_psql('postgres', "SELECT count(*) FROM batchflow.run WHERE id > $r0 AND status = 'succeeded'"),
	600, 'all 600 succeeded');
is(announcer_pid('postgres'), $ann, 'the same announcer served the whole load');

# 3. Rolled back: a whole transaction, and a savepoint.
my $rolled = $node->safe_psql('postgres', q{BEGIN; SELECT bf_start('ann_three'); ROLLBACK;});
my ($in_sp, $kept) = split /\n/,
  $node->safe_psql('postgres',
	q{BEGIN; SAVEPOINT s; SELECT bf_start('ann_three'); ROLLBACK TO s; SELECT bf_start('ann_three'); COMMIT;});
$node->safe_psql('postgres', "SELECT bf_wait($kept, '1 minute')");

# 4. PREPARE TRANSACTION after bf_start: refused, as for any NOTIFY.
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{BEGIN; SELECT bf_start('ann_three'); PREPARE TRANSACTION 'with_start';});
like($stderr, qr/cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY/,
	'PREPARE TRANSACTION after bf_start is refused as for NOTIFY');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_prepared_xacts}), 0, 'nothing prepared');
$node->safe_psql('postgres', q{BEGIN; CREATE TABLE t_prep_ok (); PREPARE TRANSACTION 'plain'; ROLLBACK PREPARED 'plain';});
my $after_prepare = $node->safe_psql('postgres', 'SELECT max(id) FROM batchflow.run');

my @p = payloads($l);
my @load = grep { $_->{run} > $r0 && $_->{run} <= $r1 } @p;
my @problems = order_problems(\@p, $r0, $r1);
is(scalar(@problems), 0, 'every run of the load announced in causal order, none lost')
  or diag(join("\n", @problems[ 0 .. ($#problems < 20 ? $#problems : 20) ]));
my @foreign = grep { $_->{pid} != $ann } @load;
is(scalar(@foreign), 0, 'every payload of the load was sent by the announcer, none by the transactions')
  or diag(scalar(@foreign) . ' of ' . scalar(@load) . ' from other processes');
is_deeply([ (map { $_->{pid} } grep { $_->{run} == $first } @p)[ 0, 1 ] ], [ $me0, $me0 ],
	'the uncontended first bf_start notified from its own session');
is(scalar(grep { $_->{run} == $rolled || $_->{run} == $in_sp } @p), 0,
	"runs $rolled (rolled back) and $in_sp (savepoint rolled back) announced nothing");
is(scalar(order_problems(\@p, $kept - 1, $kept)), 0, "run $kept (kept after the savepoint) announced in full");
is(scalar(grep { $_->{run} > $kept } @p), 0, 'the refused PREPARE announced nothing');

# 5. The announcer terminated: the next transaction notifies for itself,
# and a new announcer takes over.
$l = listener('postgres');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($ann)");
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $ann")
  or diag('announcer did not exit');
my ($me, $alone) = split /\|/, $node->safe_psql('postgres', q{SELECT pg_backend_pid(), bf_start('ann_three')});
$node->safe_psql('postgres', "SELECT bf_wait($alone, '1 minute')");
my $ann2 = announcer_pid('postgres');
ok($ann2 ne '' && $ann2 != $ann, "a new announcer runs ($ann2)");
my $next = $node->safe_psql('postgres', q{SELECT bf_start('ann_three')});
$node->safe_psql('postgres', "SELECT bf_wait($next, '1 minute')");
@p = payloads($l);
my @alone = grep { $_->{run} == $alone } @p;
is_deeply([ map { $_->{pid} } @alone[ 0, 1 ] ], [ $me, $me ],
	'with no announcer, bf_start notified from its own transaction');
is(scalar(order_problems(\@p, $alone - 1, $alone)), 0, 'and all 4 payloads of that run arrived in order');
my @nextp = grep { $_->{run} == $next } @p;
ok(@nextp >= 4 && !grep({ $_->{pid} != $ann2 } @nextp), 'the next run was announced by the new announcer')
  or diag(explain(\@nextp));
is(scalar(order_problems(\@p, $next - 1, $next)), 0, 'in order');

# 6. The announcer terminated in the middle of a load: nothing is lost.
$l = listener('postgres');
$r0 = $node->safe_psql('postgres', 'SELECT max(id) FROM batchflow.run');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-j', '2', '-t', '150', '-f', $script, '-d', $node->connstr('postgres') ],
	'>', \my $bout, '2>', \my $berr);
$node->poll_query_until('postgres', "SELECT count(*) >= 100 FROM batchflow.run WHERE id > $r0");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($ann2)");
$bench->finish;
is($bench->result(0), 0, 'pgbench during the termination succeeded') or diag($berr);
wait_runs_done();
$r1 = $node->safe_psql('postgres', 'SELECT max(id) FROM batchflow.run');
@p = payloads($l);
@problems = order_problems(\@p, $r0, $r1);
is(scalar(@problems), 0, 'announcer terminated during the load: every run announced, in order')
  or diag(join("\n", @problems[ 0 .. ($#problems < 20 ? $#problems : 20) ]));

# 6b. Not forced: transactions that find the notify lock free notify
# themselves, the others queue; the order holds across both paths.
$node->safe_psql('postgres', q{ALTER SYSTEM RESET batchflow.debug_announce_queued; SELECT pg_reload_conf();});
sleep(1);
$l = listener('postgres');
$r0 = $node->safe_psql('postgres', 'SELECT max(id) FROM batchflow.run');
$node->command_ok([ 'pgbench', '-n', '-c', '4', '-j', '2', '-t', '150', '-f', $script,
		'-d', $node->connstr('postgres') ], 'pgbench: 600 bf_start, queueing not forced');
wait_runs_done();
$r1 = $node->safe_psql('postgres', 'SELECT max(id) FROM batchflow.run');
@p = payloads($l);
@problems = order_problems(\@p, $r0, $r1);
is(scalar(@problems), 0, 'both paths mixed: every run announced in causal order, none lost')
  or diag(join("\n", @problems[ 0 .. ($#problems < 20 ? $#problems : 20) ]));
# Read at once: with no contention no announcer may have started, and
# polling for one would only wait out the poll's timeout.
my $ann3 = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow announcer' AND datname = 'postgres'");
note('payloads sent by the announcer: ' . scalar(grep { $ann3 ne '' && $_->{pid} == $ann3 } @p) . ' of ' . scalar(@p));
$node->safe_psql('postgres', q{ALTER SYSTEM SET batchflow.debug_announce_queued = on; SELECT pg_reload_conf();});
sleep(1);

# 7. After a crash (a worker killed with SIGKILL), payloads still arrive.
my $wpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow worker' LIMIT 1");
kill 'KILL', $wpid;
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $wpid");
$node->poll_query_until('postgres', 'SELECT true');
$l = listener('postgres');
my $post = $node->safe_psql('postgres', q{SELECT bf_start('ann_three')});
$node->safe_psql('postgres', "SELECT bf_wait($post, '1 minute')");
my $post2 = $node->safe_psql('postgres', q{SELECT bf_start('ann_three')});
$node->safe_psql('postgres', "SELECT bf_wait($post2, '1 minute')");
@p = payloads($l);
is(scalar(order_problems(\@p, $post - 1, $post)) + scalar(order_problems(\@p, $post2 - 1, $post2)), 0,
	'after the crash, the runs are announced in order');

# 8. A template database is not served: the session notifies itself, and
# no announcer starts there.
$node->safe_psql('postgres', q{CREATE DATABASE ann_tmpl IS_TEMPLATE true});
$node->safe_psql('ann_tmpl', q{SET client_min_messages = error; CREATE EXTENSION batchflow;
SELECT bf_register('ann_three', '{"nodes": [{"id": "x", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}');});
$l = listener('ann_tmpl');
my ($tpid, $trun) = split /\|/, $node->safe_psql('ann_tmpl',
	q{SET client_min_messages = error; SELECT pg_backend_pid(), bf_start('ann_three')});
@p = payloads($l);
is_deeply([ map { "$_->{pid}:$_->{status}" } grep { $_->{run} == $trun } @p ],
	[ "$tpid:running", "$tpid:running" ],
	'unserved database: the run and its first node announced from the session itself');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow announcer' AND datname = 'ann_tmpl'"),
	0, 'no announcer in the unserved database');

# 9. DROP DATABASE does not wait for the database's announcer.
$node->safe_psql('postgres', q{CREATE DATABASE ann_drop});
$node->safe_psql('ann_drop', q{CREATE EXTENSION batchflow;
SELECT bf_register('one', '{"nodes": [{"id": "x", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}');});
my $drun = $node->safe_psql('ann_drop', q{SELECT bf_start('one')});
$node->safe_psql('ann_drop', "SELECT bf_wait($drun, '1 minute')");
$node->safe_psql('ann_drop', q{SELECT bf_start('one')});
ok(announcer_pid('ann_drop') ne '', 'database ann_drop has an announcer');
my $t0 = time();
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE ann_drop');
is($ret, 0, 'DROP DATABASE with an announcer connected succeeds') or diag($stderr);
cmp_ok(time() - $t0, '<', 4.5, 'without waiting out the 5 s for other sessions');

$node->stop;
done_testing();
