# Recovery of claims that no live worker holds, from both sides.
#
# Items with an HTTP child are marked 'running' with the claiming worker's
# pid while their request is in flight (the claim outlives transactions).
# The launcher's sweep puts such an item back to 'pending' exactly when no
# live worker of the pool holds its claim: the pid is gone, there is no pid,
# or the pid was reused by a process that started after the claim; and
# after a restart or crash, every claim.  A claim a live worker holds is
# never re-queued (its request would be sent twice).  The rows are set up
# by hand where no crash can be timed to leave them so.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('recovery', "batchflow.poll_interval = '200ms'\n");
sub query { return $node->safe_psql('postgres', $_[0]); }

query(q{
CREATE TABLE gate (closed boolean NOT NULL);
INSERT INTO gate VALUES (true);
CREATE FUNCTION pass_gate() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WHILE (SELECT closed FROM gate) LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END;
$$;
CREATE TABLE effect (run bigint NOT NULL, idx int NOT NULL,
                     xid xid8 NOT NULL DEFAULT pg_current_xact_id(), UNIQUE (run, idx));
SELECT bf_register('gated', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 1,
   "inputSource": {"variable": "items"},
   "children": [{"id": "wait", "type": "activity", "activity": "sql", "sql": "SELECT pass_gate()"},
                {"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO effect (run, idx) VALUES (($3->>''run'')::bigint, $2)"}]}]}');
});

# Start a gated run of 6 items and wait until item 0 is executing (it waits
# at the gate; the others are pending and unlocked).
sub start_gated
{
	query('UPDATE gate SET closed = true');
	my $run = query(q{SELECT bf_start('gated', '{"items": [0, 1, 2, 3, 4, 5]}')});
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM batchflow.active_items() WHERE run_id = $run"),
		"run $run: item 0 waits at the gate");
	return $run;
}

sub statuses
{
	my ($run) = @_;
	return query("SELECT string_agg(idx || ':' || status, ' ' ORDER BY idx) FROM batchflow.item WHERE run_id = $run AND idx >= 3");
}

# 1. While the server runs: a claim with no pid, a claim whose pid is now a
# live worker that started after the claim (pid reuse), a claim of a pid
# that is gone.  All three are re-queued and the run finishes.
my $run = start_gated();
my ($live_pid, $live_start) = split /\|/, query(q{
SELECT pid, backend_start FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' ORDER BY pid LIMIT 1});
my $log_offset = -s $node->logfile;
query(qq{
BEGIN;
UPDATE batchflow.item SET status = 'running', worker_pid = NULL, started_at = now()
 WHERE run_id = $run AND idx = 3;
UPDATE batchflow.item SET status = 'running', worker_pid = $live_pid,
       started_at = '$live_start'::timestamptz - interval '1 second'
 WHERE run_id = $run AND idx = 4;
UPDATE batchflow.item SET status = 'running', worker_pid = pg_backend_pid(), started_at = now()
 WHERE run_id = $run AND idx = 5;
COMMIT;
});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM batchflow.item WHERE run_id = $run AND status = 'running'"),
	'claims with no pid, a reused pid and a dead pid are re-queued while the server runs');
ok($node->log_contains('re-queued \d+ HTTP items of workers that exited', $log_offset),
	'the launcher logged the re-queue');
query('UPDATE gate SET closed = false');
is(query("SELECT bf_wait($run, '30 seconds')"), 'succeeded', 'the run finishes');
is(oracle_exactly_once($node, $run, 'each', 'effect'), '6|6|6|6|6',
	'oracle: every item took effect once, in its completion transaction');

# 2. Claims that live workers hold (their pid, started before the claim)
# stay running through several sweeps; a crash re-queues them.
$run = start_gated();
my @live = split /\n/, query(q{
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' ORDER BY pid LIMIT 2});
query(qq{
UPDATE batchflow.item SET status = 'running', worker_pid = $live[0], started_at = clock_timestamp()
 WHERE run_id = $run AND idx = 3;
UPDATE batchflow.item SET status = 'running', worker_pid = $live[1], started_at = clock_timestamp()
 WHERE run_id = $run AND idx = 4;
});
sleep(1);    # five sweeps
is(statuses($run), '3:running 4:running 5:pending',
	'claims held by live workers are left alone');
$node->stop('immediate');
$node->start;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM batchflow.item WHERE run_id = $run AND status = 'running'"),
	'after the crash both claims are re-queued');
query('UPDATE gate SET closed = false');
is(query("SELECT bf_wait($run, '30 seconds')"), 'succeeded', 'the run finishes after the crash');
is(oracle_exactly_once($node, $run, 'each', 'effect'), '6|6|6|6|6',
	'oracle: every item took effect once, in its completion transaction');

# 3. HTTP requests in flight, from both sides.
my $port = start_http_server();
like($port, qr/^\d+$/, "the test HTTP server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";
query(qq{SELECT bf_register('slow_http', \$j\${"nodes": [{"id": "each", "type": "loop",
  "loopType": "parallel", "concurrency": 5, "inputSource": {"variable": "items"},
  "children": [{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms=1500"}]}]}\$j\$)});

# Requests of live workers are never re-queued: 10 requests of 1.5 s, about
# 7 sweeps each, one request per item.
server_json($base, '/reset');
$run = query(q{SELECT bf_start('slow_http', '{"items": [1,2,3,4,5,6,7,8,9,10]}')});
is(query("SELECT bf_wait($run, '1 minute')"), 'succeeded', 'the slow HTTP run succeeds');
my $stats = server_json($base, '/stats');
is($stats->{paths}{'/sleep'}, 10, 'one request per item: no in-flight claim was re-queued');

# A server crash with requests in flight: the claims are re-queued after
# the restart and the run finishes (HTTP is at-least-once: the server may
# see a request again, with the same key).
server_json($base, '/reset');
$run = query(q{SELECT bf_start('slow_http', '{"items": [1,2,3,4,5,6,7,8,9,10]}')});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 5 FROM batchflow.item WHERE run_id = $run AND status = 'running' AND worker_pid IS NOT NULL"),
	'5 requests are in flight');
$node->stop('immediate');
$node->start;
is(query("SELECT bf_wait($run, '1 minute')"), 'succeeded', 'the run finishes after the crash');
is(query("SELECT count(*) FILTER (WHERE status = 'succeeded') FROM batchflow.item WHERE run_id = $run"),
	'10', 'every item succeeded');
$stats = server_json($base, '/stats');
is(scalar(keys %{ $stats->{keys} }), 10, 'repeated requests carried the same idempotency key');

$node->stop;
done_testing();
