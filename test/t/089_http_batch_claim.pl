# HTTP items claimed a round at a time (src/http_claim.c): a slot freed by
# a response is refilled in the same round, even when the worker already
# keeps batchflow.http_max_inflight requests in flight; several workers
# sharing one loop's cap through batched claims never exceed it; retried
# items put back below the workers' claim hints are found again; a round
# whose recording fails loses none of its items; every item ends once.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_http_server();
like($port, qr/^\d+$/, "the test HTTP server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";
sub server { return server_json($base, $_[0]); }

# One worker, two requests at a time: nobody else can take a freed slot.
my $node = crash_node('http_batch_claim',
	"batchflow.max_workers = 1\nbatchflow.http_max_inflight = 2\n");
sub query { return $node->safe_psql('postgres', $_[0]); }

sub register
{
	my ($name, $loop, $children) = @_;
	query(qq{SELECT bf_register('$name', \$j\${"nodes": [{"id": "each", "type": "loop", $loop,
	     "inputSource": {"variable": "items"}, "children": $children}]}\$j\$)});
}

sub run_items
{
	my ($name, $items) = @_;
	my $run = query(qq{SELECT bf_start('$name', jsonb_build_object('items', \$j\$$items\$j\$::jsonb))});
	is(query("SELECT bf_wait($run, '2 minutes')"), 'succeeded', "run of $name succeeded");
	return $run;
}

# 1. Items of 200 ms, 4 s and 200 ms at cap 2, one worker keeping at most 2
# requests in flight: item 2 takes item 0's slot as soon as item 0's
# response is recorded, not when item 1's arrives 4 s later (the round
# that recorded item 0 used to count it as still in flight and claim
# nothing, and no other round came until item 1 ended).
register('refill', q{"loopType": "parallel", "concurrency": 2},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms={{item}}"}]});
my $run = run_items('refill', '[200, 4000, 200]');
my ($gap, $before_1) = split /\|/, query(
	"SELECT round(extract(epoch FROM i2.started_at - i0.finished_at)::numeric, 3),
	        round(extract(epoch FROM i1.finished_at - i2.started_at)::numeric, 3)
	   FROM batchflow.items i0, batchflow.items i1, batchflow.items i2
	  WHERE i0.run_id = $run AND i0.idx = 0 AND i1.run_id = $run AND i1.idx = 1
	    AND i2.run_id = $run AND i2.idx = 2");
note("item 2 started $gap s after item 0 ended, $before_1 s before item 1 ended");
cmp_ok($gap, '>=', 0, 'item 2 starts no earlier than item 0 ended');
cmp_ok($gap, '<', 1.0, 'item 2 starts within 1 s of the slot freed by item 0');
cmp_ok($before_1, '>', 2.0, 'item 2 does not wait for item 1, the 4 s request');
is(query("SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1) FROM batchflow.items WHERE run_id = $run"),
	3, 'each item succeeded at its first attempt');

# 2. Four workers, each keeping at most 2 requests in flight, share a cap of
# 6 over 120 items of 50 ms: the server sees exactly 6 at once at most, one
# request per item, and each item ran once.
$node->append_conf('postgresql.conf', "batchflow.max_workers = 4\n");
$node->restart;
server('/reset');
register('shared', q{"loopType": "parallel", "concurrency": 6},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms=50&i={{index}}"}]});
$run = run_items('shared', '[' . join(',', 1 .. 120) . ']');
my $stats = server('/stats');
is($stats->{peak}, 6, 'server-observed peak is exactly the cap, 6, with several workers');
is($stats->{paths}{'/sleep'}, 120, 'one request per item');
is(query("SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1) FROM batchflow.items WHERE run_id = $run"),
	120, 'every item succeeded at its first attempt');
is(query("SELECT count(*) FROM batchflow.item_error WHERE run_id = $run"), 0, 'no attempt failed');

# 3. Every third of 90 items fails its first attempt: the retry puts it back
# to pending below the claim hints of the workers, which must find it again
# (a scan from index 0); each retried item is requested twice, the others
# once, and every item ends succeeded.
server('/reset');
register('retry', q{"loopType": "parallel", "concurrency": 6, "errorStrategy": "retry", "maxRetries": 2, "retryDelayMs": 10},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/flaky?id={{index}}&fails={{item}}&ms=20"}]});
$run = run_items('retry', '[' . join(',', map { $_ % 3 ? 0 : 1 } 0 .. 89) . ']');
$stats = server('/stats');
is($stats->{paths}{'/flaky'}, 120, 'requests = 90 items + 30 failed first attempts');
cmp_ok($stats->{peak}, '<=', 6, 'the cap held through the retries');
is(query("SELECT string_agg(DISTINCT attempts::text, ',') FROM batchflow.items WHERE run_id = $run AND idx % 3 = 0"),
	'2', 'retried items took 2 attempts');
is(query("SELECT string_agg(DISTINCT attempts::text, ',') FROM batchflow.items WHERE run_id = $run AND idx % 3 <> 0"),
	'1', 'the others took 1');
is(query("SELECT count(*) FROM batchflow.items WHERE run_id = $run AND status = 'succeeded'"),
	90, 'every item ended succeeded');
is(query("SELECT count(*) FROM batchflow.item WHERE worker_pid IS NOT NULL"),
	0, 'no item is left marked with a worker');

# 4. A round records its successes in one statement (src/http_record.c).
# Make that statement fail once, for the round that records item 7: the
# round rolls back as a whole, its items go back to pending and run again;
# none is lost or recorded twice, and every item ends succeeded once.
server('/reset');
query(q{CREATE SEQUENCE boom_once;
CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  IF nextval('public.boom_once') = 1 THEN
    RAISE EXCEPTION 'recording item % fails once', NEW.idx;
  END IF;
  RETURN NEW;
END $f$;
CREATE TRIGGER boom BEFORE UPDATE ON batchflow.item FOR EACH ROW
  WHEN (NEW.status = 'succeeded' AND NEW.idx = 7) EXECUTE FUNCTION public.boom();});
# The endpoint is /hang, which stops counting a request once the client
# closes its connection: the failed round drops the requests in flight and
# their cap locks, and a /sleep endpoint would go on counting those for up
# to 30 ms while their replacements arrive.
register('boom', q{"loopType": "parallel", "concurrency": 5},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/hang?ms=30&i={{index}}"}]});
$run = run_items('boom', '[' . join(',', 1 .. 20) . ']');
query('DROP TRIGGER boom ON batchflow.item');
$stats = server('/stats');
is(query('SELECT last_value FROM boom_once'), 2, 'the recording of item 7 failed once, then went through');
is(query("SELECT count(*) FROM batchflow.items WHERE run_id = $run AND status = 'succeeded' AND attempts = 1"),
	20, 'every item ended succeeded, recorded once');
is($stats->{keys}{"batchflow-$run-each-7-call"}, 2, 'item 7 was requested again');
cmp_ok($stats->{paths}{'/hang'}, '>', 20, 'the rolled-back round\'s items were requested again');
cmp_ok($stats->{peak}, '<=', 5, 'the cap held through the failed round');
is(query("SELECT count(*) FROM batchflow.item_error WHERE run_id = $run"), 0,
	'no attempt was recorded as failed');

$node->stop;
done_testing();
