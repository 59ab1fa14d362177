# Run control on a real cluster with real workers: bf_cancel(force => true)
# of SQL items in 30-second statements and of HTTP items in flight,
# bf_pause/bf_resume (also across a restart), bf_purge and
# batchflow.run_retention between two roles, bf_unregister.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use Time::HiRes qw(time sleep);
use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_http_server();
like($port, qr/^\d+$/, "the test HTTP server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";
sub server { return server_json($base, $_[0]); }

my $node = crash_node('run_control', "batchflow.max_workers = 6\n");
sub query { return $node->safe_psql('postgres', $_[0]); }

sub register
{
	my ($name, $loop, $children) = @_;
	query(qq{SELECT bf_register('$name', \$j\${"nodes": [{"id": "each", "type": "loop", $loop,
	     "inputSource": {"variable": "items"}, "children": $children}]}\$j\$)});
}

sub start
{
	my ($name, $items) = @_;
	return query(qq{SELECT bf_start('$name', jsonb_build_object('items', '$items'::jsonb))});
}

sub worker_pids
{
	return query(q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
	                WHERE backend_type = 'batchflow worker'});
}

query(q{CREATE TABLE sink (n int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())});
query(q{CREATE TABLE quick_sink (n int PRIMARY KEY)});

# 1. Force cancel of 4 items each in a 30-second statement: cancelled in
# under a second, their inserts rolled back, the workers kept, and the
# pool serves another run at once.
register('slow', q{"loopType": "parallel", "concurrency": 4},
	q{[{"id": "work", "type": "activity", "activity": "sql",
	    "sql": "WITH i AS (INSERT INTO sink (n) VALUES (($1)::int) RETURNING n) SELECT pg_sleep(30), (SELECT n FROM i)"}]});
register('quick', q{"loopType": "parallel", "concurrency": 4},
	q{[{"id": "put", "type": "activity", "activity": "sql",
	    "sql": "INSERT INTO quick_sink VALUES (($1)::int) RETURNING n"}]});

my $run = start('slow', '[1, 2, 3, 4, 5, 6]');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 4 FROM batchflow.active_items() WHERE run_id = $run"),
	'4 items of the slow run execute');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM pg_stat_activity
		   WHERE backend_type = 'batchflow worker' AND query LIKE 'WITH i AS (INSERT INTO sink%'}),
	'their 30-second statements run');
my $pids_before = worker_pids();

my $out = query(qq{
SELECT clock_timestamp() AS t0 \\gset
SELECT bf_cancel($run, force => true);
SELECT bf_wait($run, '10 seconds');
SELECT round(extract(epoch FROM finished_at - :'t0'::timestamptz) * 1000)
  FROM batchflow.run WHERE id = $run;
SELECT bf_start('quick', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 20) g))) AS quick \\gset
SELECT bf_wait(:quick, '10 seconds');
SELECT round(extract(epoch FROM finished_at - :'t0'::timestamptz) * 1000)
  FROM batchflow.run WHERE id = :quick;
});
my ($cancel_ret, $status, $cancel_ms, $quick_status, $quick_ms) = split /\n/, $out;
is($cancel_ret, 't', 'bf_cancel(force => true) returns true');
is($status, 'cancelled', 'the run ends cancelled');
cmp_ok($cancel_ms, '<', 1000, "from bf_cancel to run cancelled: $cancel_ms ms (< 1 s)");
diag("force cancel, 4 SQL items in 30 s statements: run cancelled $cancel_ms ms after bf_cancel was called");
is($quick_status, 'succeeded', 'another run started right after succeeds');
cmp_ok($quick_ms, '<', 5000, "the other run (20 items) finished $quick_ms ms after the cancel");
is(query('SELECT count(*) FROM sink'), '0', 'the interrupted items left no row: their effects rolled back');
is(query(qq{SELECT status, error, count(*) FROM batchflow.items WHERE run_id = $run
             GROUP BY 1, 2 ORDER BY 2 NULLS LAST}),
	"skipped|cancelled|4\nskipped||2",
	'the 4 interrupted items are skipped with error cancelled, the 2 never started are skipped');
is(query(q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'WITH i AS (INSERT INTO sink%'
            AND state = 'active'}),
	'0', 'no statement of the run is still executing');
is(worker_pids(), $pids_before, 'the same worker processes carry on (none was restarted)');
is(query("SELECT count(*) FROM batchflow.item_error WHERE run_id = $run"), '0',
	'an interrupted attempt is not recorded as a failure');

# A plain cancel still lets items in flight finish (and commit).
$run = start('slow', '[11]');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM batchflow.active_items() WHERE run_id = $run"),
	'an item of a second slow run executes');
is(query("SELECT bf_cancel($run)"), 't', 'plain bf_cancel');
sleep(1);
is(query("SELECT status FROM batchflow.runs WHERE id = $run"), 'running',
	'without force the run waits for its item in flight');
is(query("SELECT bf_cancel($run, true)"), 't', 'force cancel of a run already cancelled without force');
is(query("SELECT bf_wait($run, '5 seconds')"), 'cancelled', 'then it is cancelled at once');
is(query('SELECT count(*) FROM sink'), '0', 'and its item left no row');

# 2. Force cancel of an HTTP run: the requests in flight are aborted (the
# server sees the connections closed) and the run is cancelled.
server('/reset');
register('hang', q{"loopType": "parallel", "concurrency": 4},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/hang?ms=30000"}]});
$run = start('hang', '[1, 2, 3, 4, 5]');
my $inflight = 0;
for (my $i = 0; $i < 200 && $inflight < 4; $i++)
{
	$inflight = server('/stats')->{current};
	sleep(0.05) if $inflight < 4;
}
is($inflight, 4, 'the server holds 4 requests of the HTTP run');
$out = query(qq{
SELECT clock_timestamp() AS t0 \\gset
SELECT bf_cancel($run, force => true);
SELECT bf_wait($run, '10 seconds');
SELECT round(extract(epoch FROM finished_at - :'t0'::timestamptz) * 1000)
  FROM batchflow.run WHERE id = $run;
});
($cancel_ret, $status, $cancel_ms) = split /\n/, $out;
is($status, 'cancelled', 'the HTTP run ends cancelled');
cmp_ok($cancel_ms, '<', 1000, "from bf_cancel to run cancelled: $cancel_ms ms (< 1 s)");
diag("force cancel, 4 HTTP requests in flight: run cancelled $cancel_ms ms after bf_cancel was called");
my $closed = 0;
for (my $i = 0; $i < 40 && $closed < 4; $i++)
{
	$closed = server('/stats')->{closed};
	sleep(0.05) if $closed < 4;
}
is($closed, 4, 'the server saw the 4 connections closed by the client');
is(server('/stats')->{paths}{'/hang'}, 4, 'no request was sent again');
is(query(qq{SELECT status, error, count(*) FROM batchflow.items WHERE run_id = $run
             GROUP BY 1, 2 ORDER BY 2 NULLS LAST}),
	"skipped|cancelled|4\nskipped||1", 'the 4 items in flight are skipped with error cancelled');
is(query(qq{SELECT count(*) FROM batchflow.item WHERE run_id = $run AND worker_pid IS NOT NULL}),
	'0', 'no item is left marked as held by a worker');

# 3. Pause: in-flight items finish, no item starts for 3 s, bf_wait keeps
# waiting; resume finishes every item exactly once.
query('TRUNCATE sink');
register('steps', q{"loopType": "parallel", "concurrency": 2},
	q{[{"id": "step", "type": "activity", "activity": "sql",
	    "sql": "WITH i AS (INSERT INTO sink (n) VALUES (($1)::int) RETURNING n) SELECT pg_sleep(0.2), (SELECT n FROM i)"}]});
$run = start('steps', '[' . join(',', 1 .. 20) . ']');
ok($node->poll_query_until('postgres', 'SELECT count(*) >= 2 FROM sink'), 'the run makes progress');
is(query("SELECT bf_pause($run)"), 't', 'bf_pause returns true');
is(query("SELECT bf_pause($run)"), 'f', 'pausing a paused run returns false');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM batchflow.active_items() WHERE run_id = $run"),
	'the items in flight finish');
my $done = query('SELECT count(*) FROM sink');
cmp_ok($done, '<', 20, "$done of 20 items done when paused");
is(query(qq{SELECT status FROM batchflow.runs WHERE id = $run}), 'paused', 'the run is paused');
is(query(qq{SELECT bf_wait($run, '3 seconds')}), 'paused', 'bf_wait waits on a paused run (3 s) and returns paused');
is(query('SELECT count(*) FROM sink'), $done, 'no item started during those 3 s');
is(query(qq{SELECT count(*) FROM batchflow.items WHERE run_id = $run AND status = 'running'}),
	'0', 'nothing is executing');
is(query("SELECT bf_resume($run)"), 't', 'bf_resume returns true');
is(query("SELECT bf_resume($run)"), 'f', 'resuming a running run returns false');
is(query("SELECT bf_wait($run, '1 minute')"), 'succeeded', 'the resumed run succeeds');
is(query(qq{SELECT count(*), count(DISTINCT n) FROM sink}), '20|20', 'every item took effect once');
is(query(qq{SELECT count(*) FROM batchflow.item WHERE run_id = $run AND status = 'succeeded' AND attempts = 1}),
	'20', 'every item succeeded at its first attempt');

# 4. A paused run stays paused across a restart, and resumes after it.
query('TRUNCATE sink');
$run = start('steps', '[' . join(',', 1 .. 10) . ']');
ok($node->poll_query_until('postgres', 'SELECT count(*) >= 1 FROM sink'), 'the run starts');
query("SELECT bf_pause($run)");
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM batchflow.active_items() WHERE run_id = $run"),
	'its items in flight finish');
$done = query('SELECT count(*) FROM sink');
$node->restart;
is(query("SELECT status FROM batchflow.runs WHERE id = $run"), 'paused', 'after a restart the run is still paused');
sleep(2);
is(query('SELECT count(*) FROM sink'), $done, 'and nothing of it started in the 2 s after the restart');
query("SELECT bf_resume($run)");
is(query("SELECT bf_wait($run, '1 minute')"), 'succeeded', 'resumed after the restart, it succeeds');
is(query('SELECT count(*), count(DISTINCT n) FROM sink'), '10|10', 'every item took effect once');

# 5. bf_purge between two roles: a role purges only its own finished runs.
query(q{
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
GRANT USAGE ON SCHEMA batchflow TO alice, bob;
});
sub as
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE $role; $sql");
}
as('alice', q{SELECT bf_register('a_wf', '{"nodes": [{"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2, "inputSource": {"variable": "items"}, "children": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT CASE WHEN ($1)::int = 2 THEN 1 / 0 ELSE ($1)::int END"}]}]}')});
as('bob', q{SELECT bf_register('b_wf', '{"nodes": [{"id": "c", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}')});
my @a = map { as('alice', q{SELECT bf_start('a_wf', '{"items": [1, 2, 3]}')}) } 1 .. 3;
my $b = as('bob', q{SELECT bf_start('b_wf')});
query("SELECT bf_wait($_, '1 minute')") for (@a, $b);
# Paused in the transaction that starts it: no worker ever sees it running.
my $a_open = as('alice', q{SELECT r FROM bf_start('a_wf', '{"items": [1]}') r, bf_pause(r)});
query("UPDATE batchflow.run SET finished_at = now() - interval '2 days' WHERE id IN ($a[0], $b)");
is(as('alice', q{SELECT bf_purge('1 day')}), '1', "alice's bf_purge('1 day') deletes her one run finished 2 days ago");
is(query("SELECT count(*) FROM batchflow.run WHERE id = $b"), '1', "bob's old run is kept");
is(query(qq{SELECT (SELECT count(*) FROM batchflow.loop WHERE run_id = $a[0])
                 + (SELECT count(*) FROM batchflow.item WHERE run_id = $a[0])
                 + (SELECT count(*) FROM batchflow.item_error WHERE run_id = $a[0])
                 + (SELECT count(*) FROM batchflow.loop_progress WHERE run_id = $a[0])}),
	'0', 'the purged run left no loop, item, item error or progress row');
is(as('alice', q{SELECT bf_purge('0')}), '2', "alice's bf_purge('0') deletes her 2 other finished runs");
is(query(qq{SELECT string_agg(id::text, ',' ORDER BY id) FROM batchflow.run
             WHERE owner IN ('alice'::regrole, 'bob'::regrole)}),
	"$b,$a_open", "what is left: bob's run and alice's unfinished run");
is(as('bob', q{SELECT bf_purge('0')}), '1', 'bob purges his own run');
my ($ok, $err);
($ok, $out, $err) = $node->psql('postgres', "SET ROLE alice; SELECT bf_purge('-1 day')");
like($err, qr/older_than must not be negative/, 'a negative interval is refused');

# 6. bf_unregister: refused while a run is unfinished, then removes all.
($ok, $out, $err) = $node->psql('postgres', "SET ROLE alice; SELECT bf_unregister('a_wf')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55006: workflow "a_wf" has a run that is not finished/, 'unregister refuses while a run is paused (55006)');
like($err, qr/Run $a_open is paused/, 'the error names the run');
($ok, $out, $err) = $node->psql('postgres', "SET ROLE bob; SELECT bf_unregister('a_wf')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501: permission denied for workflow "a_wf"/, "bob may not unregister alice's workflow");
as('alice', "SELECT bf_cancel($a_open)");
is(as('alice', "SELECT bf_wait($a_open, '10 seconds')"), 'cancelled', 'the open run is cancelled');
is(as('alice', q{SELECT bf_unregister('a_wf')}), 't', 'then bf_unregister works');
is(query(q{SELECT count(*) FROM batchflow.workflow_version WHERE workflow = 'a_wf'}), '0', 'its versions are gone');
is(query(qq{SELECT count(*) FROM batchflow.run WHERE id = $a_open}), '0', 'and its runs');
is(as('alice', q{SELECT string_agg(name, ',') FROM batchflow.workflows}), '',
	'alice sees no workflow any more');
is(as('bob', q{SELECT name || ':' || version || ':' || versions || ':' || runs FROM batchflow.workflows}),
	'b_wf:1:1:0', "bob sees his workflow, without the purged run");
($ok, $out, $err) = $node->psql('postgres', "SET ROLE alice; SELECT bf_start('a_wf')");
like($err, qr/workflow "a_wf" does not exist/, 'an unregistered workflow cannot be started');
($ok, $out, $err) = $node->psql('postgres', "SET ROLE bob; SELECT bf_start('b_fw')");
like($err, qr/HINT:  Did you mean "b_wf"\?/, 'the hint names the closest registered workflow');
($ok, $out, $err) = $node->psql('postgres', "SET ROLE alice; SELECT bf_start('b_fw')");
unlike($err, qr/b_wf/, "the hint never names a workflow the caller may not use");

# 7. batchflow.run_retention: the launcher deletes whole finished runs.
$run = start('quick', '[100, 101]');
query("SELECT bf_wait($run, '1 minute')");
my $open = query(q{SELECT r FROM bf_start('steps', '{"items": [500]}') r, bf_pause(r)});
query(q{ALTER SYSTEM SET batchflow.run_retention = '1s'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM batchflow.run WHERE id = $run"),
	'with batchflow.run_retention = 1s the launcher deletes the finished run');
is(query("SELECT count(*) FROM batchflow.run WHERE id = $open"), '1', 'and keeps the unfinished one');
query(q{ALTER SYSTEM RESET batchflow.run_retention; SELECT pg_reload_conf()});
query("SELECT bf_cancel($open)");

$node->stop;
done_testing();
