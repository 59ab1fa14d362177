# HTTP activities against a real HTTP server on 127.0.0.1
# (test/http_server.py): the per-loop cap as the server sees it, templating
# with awkward characters, retries of a flaky endpoint, timeouts, 429 with
# Retry-After, the host allow-list, the stored response, SQL and HTTP
# children mixed in one item, and a worker killed with requests in flight.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use Encode;
use JSON::PP;
use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The test server, on a free port of 127.0.0.1.
my $port = start_http_server();
like($port, qr/^\d+$/, "the test HTTP server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";
sub server { return server_json($base, $_[0]); }

my $node = crash_node('http');

# Register a one-loop workflow with the given loop properties and children.
sub register
{
	my ($name, $loop, $children) = @_;
	$node->safe_psql('postgres',
		qq{SELECT bf_register('$name', \$j\${"nodes": [{"id": "each", "type": "loop", $loop,
		     "inputSource": {"variable": "items"}, "children": $children}]}\$j\$)});
}

# Start a run with the given items (a JSON array), wait, return its id.
sub run_items
{
	my ($name, $items) = @_;
	my $run = $node->safe_psql('postgres',
		qq{SELECT bf_start('$name', jsonb_build_object('items', \$j\$$items\$j\$::jsonb))});
	is($node->safe_psql('postgres', "SELECT bf_wait($run, '2 minutes')"),
		'succeeded', "run of $name succeeded");
	return $run;
}

sub query { return $node->safe_psql('postgres', $_[0]); }

# 1. 100 items at cap 5: the server never sees more than 5 at once, and
# sees exactly 5 at some point; one request per item, each with its own
# Idempotency-Key.
server('/reset');
register('cap5', q{"loopType": "parallel", "concurrency": 5},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms=50"}]});
my $run = run_items('cap5', '[' . join(',', 1 .. 100) . ']');
my $stats = server('/stats');
is($stats->{peak}, 5, 'server-observed peak concurrency is exactly the cap, 5');
is($stats->{paths}{'/sleep'}, 100, 'one request per item');
is(scalar(keys %{ $stats->{keys} }), 100, '100 distinct idempotency keys');
is(query("SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1) FROM batchflow.items WHERE run_id = $run"),
	100, 'every item succeeded at the first attempt');

# 2. Templating with awkward characters: url (percent-encoded), header,
# JSON body (whole value and inside a string).
register('tmpl', q{"loopType": "parallel", "concurrency": 3},
	qq{[{"id": "call", "type": "activity", "activity": "http", "method": "POST",
	     "url": "$base/echo?name={{item.name}}&i={{index}}&run={{run}}",
	     "headers": {"X-Name": "{{item.name}}"},
	     "body": {"whole": "{{item}}", "text": "hi {{item.name}}!", "n": "{{item.n}}"}}]});
my @names = ('a b', 'x&y=z', q{it's "quoted"}, "caf\x{e9} \x{1F600}", 'back\\slash', '{{item}}', '%20/?#');
my $items = encode_json([ map { { name => $names[$_], n => $_ } } 0 .. $#names ]);
$run = run_items('tmpl', $items);
for my $i (0 .. $#names)
{
	my $out = decode_json(
		query("SELECT output -> 'body' FROM batchflow.items WHERE run_id = $run AND idx = $i"));
	my $name = $names[$i];
	is($out->{args}{name}, $name, "url: the name of item $i arrives intact");
	is($out->{args}{i}, "$i", "url: {{index}} is $i");
	is($out->{args}{run}, "$run", 'url: {{run}} is the run id');
	my $body = decode_json(Encode::encode('UTF-8', $out->{body}));
	is_deeply($body->{whole}, { name => $name, n => $i }, "body: {{item}} is item $i as JSON");
	is($body->{text}, "hi $name!", "body: placeholder inside a string, item $i");
	is($body->{n}, $i, "body: {{item.n}} keeps its JSON type (number), item $i");
}
is(decode_json(query("SELECT output -> 'body' -> 'headers' FROM batchflow.items WHERE run_id = $run AND idx = 1"))->{'x-name'},
	'x&y=z', 'header value templated');
like(
	query("SELECT output -> 'body' ->> 'query' FROM batchflow.items WHERE run_id = $run AND idx = 1"),
	qr/^name=x%26y%3Dz&i=1&run=\d+$/, 'url: & and = are percent-encoded');

# 3. A flaky endpoint: even items fail their first attempt (500), retries
# succeed; request count = items + failures; keys stable across retries.
server('/reset');
register('flaky', q{"loopType": "parallel", "concurrency": 4, "errorStrategy": "retry", "maxRetries": 3, "retryDelayMs": 10},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/flaky?id={{index}}&fails={{item}}"}]});
$run = run_items('flaky', '[' . join(',', map { $_ % 2 ? 0 : 1 } 0 .. 19) . ']');
$stats = server('/stats');
is($stats->{paths}{'/flaky'}, 30, 'requests = 20 items + 10 failed first attempts');
is(scalar(keys %{ $stats->{keys} }), 20, 'one idempotency key per item');
is(scalar(grep { $_ == 2 } values %{ $stats->{keys} }), 10, 'retried items reuse their key');
is(query("SELECT string_agg(DISTINCT attempts::text, ',') FROM batchflow.items WHERE run_id = $run AND idx % 2 = 0"),
	'2', 'even items took 2 attempts');
is(query("SELECT string_agg(DISTINCT attempts::text, ',') FROM batchflow.items WHERE run_id = $run AND idx % 2 = 1"),
	'1', 'odd items took 1 attempt');
like(query("SELECT error FROM batchflow.item_error WHERE run_id = $run ORDER BY idx LIMIT 1"),
	qr{^GET http://127\.0\.0\.1:\d+/flaky\?id=0&fails=1 returned HTTP status 500: flaky failure 1 of 0$},
	'a failed attempt keeps the status and a snippet of the body');

# 4. Timeouts fail the attempt, quickly, with curl's error.
register('slow', q{"loopType": "parallel", "concurrency": 2, "errorStrategy": "continue"},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms={{item}}", "timeoutMs": 300}]});
$run = run_items('slow', '[10, 5000]');
is(query("SELECT string_agg(status, ',' ORDER BY idx) FROM batchflow.items WHERE run_id = $run"),
	'succeeded,failed', 'the slow request failed, the quick one succeeded');
like(query("SELECT error FROM batchflow.items WHERE run_id = $run AND idx = 1"),
	qr/Timeout was reached|timed out/i, 'the error says it timed out');
is(query("SELECT sqlstate FROM batchflow.item_error WHERE run_id = $run"), '57014',
	'a timeout is recorded as query_canceled (57014)');
is(query("SELECT duration < interval '3 seconds' FROM batchflow.items WHERE run_id = $run AND idx = 1"),
	't', 'the timeout cut the attempt short');

# 5. 429 with Retry-After: 1 is honoured even though retryDelayMs is 10.
server('/reset');
register('limited', q{"loopType": "parallel", "concurrency": 2, "errorStrategy": "retry", "maxRetries": 2, "retryDelayMs": 10},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/retry-after?id={{item}}&s=1"}]});
$run = run_items('limited', '["a", "b"]');
$stats = server('/stats');
for my $id ('a', 'b')
{
	my @t = @{ $stats->{times}{$id} };
	is(scalar(@t), 2, "item $id: one 429, then one success");
	cmp_ok($t[1] - $t[0], '>=', 0.95, "item $id: the retry waited for Retry-After (" . sprintf('%.2f', $t[1] - $t[0]) . ' s)');
}
like(query("SELECT error FROM batchflow.item_error WHERE run_id = $run ORDER BY idx LIMIT 1"),
	qr/returned HTTP status 429: slow down$/, 'the 429 attempt is recorded');

# 6. Schemes and hosts.
my ($rc, $out, $err) = $node->psql('postgres',
	qq{SELECT bf_register('ftp', '{"nodes": [{"id": "f", "type": "activity", "activity": "http", "url": "ftp://127.0.0.1/x"}]}')});
like($err, qr/property "url" must start with http:\/\/ or https:\/\//, 'an ftp url is rejected at registration');
register('host', q{"loopType": "sequential"},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "http://{{item}}:$port/text"}]});
$run = $node->safe_psql('postgres', q{SELECT bf_start('host', '{"items": ["127.0.0.1/x@evil.example"]}')});
is($node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')"), 'failed',
	'a templated host cannot smuggle in a path or user');
like(query("SELECT error FROM batchflow.items WHERE run_id = $run"),
	qr{127\.0\.0\.1%2Fx%40evil\.example}, 'the item was percent-encoded into the host name');
query(q{ALTER SYSTEM SET batchflow.http_allowed_hosts = 'localhost, api.example.com'});
query('SELECT pg_reload_conf()');
sleep 1;
$run = $node->safe_psql('postgres', q{SELECT bf_start('host', '{"items": ["127.0.0.1"]}')});
is($node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')"), 'failed',
	'a host outside batchflow.http_allowed_hosts is refused');
is(query("SELECT error FROM batchflow.items WHERE run_id = $run"),
	'host "127.0.0.1" is not in batchflow.http_allowed_hosts', 'the error names the setting');
query(q{ALTER SYSTEM SET batchflow.http_allowed_hosts = '127.0.0.1'});
query('SELECT pg_reload_conf()');
sleep 1;
$run = run_items('host', '["127.0.0.1"]');
pass('a host in the allow-list is called');
# A long host name (over 63 bytes) in the list is kept whole: the request
# gets past the allow-list and fails only on name resolution.
my $long = ('a' x 70) . '.invalid';
query(qq{ALTER SYSTEM SET batchflow.http_allowed_hosts = '127.0.0.1, $long'});
query('SELECT pg_reload_conf()');
sleep 1;
$run = $node->safe_psql('postgres', qq{SELECT bf_start('host', '{"items": ["$long"]}')});
$node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')");
unlike(query("SELECT error FROM batchflow.items WHERE run_id = $run"),
	qr/http_allowed_hosts/, 'a 78-byte allow-list entry matches its host');
query('ALTER SYSTEM RESET batchflow.http_allowed_hosts');
query('SELECT pg_reload_conf()');

# 7. The stored response: text, JSON, empty, truncated, error statuses.
register('resp', q{"loopType": "parallel", "concurrency": 4, "errorStrategy": "continue"},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/{{item.path}}?kb={{item.kb}}"}]});
$run = $node->safe_psql('postgres',
	q{SELECT bf_start('resp', '{"items": [{"path": "text"}, {"path": "echo"}, {"path": "big", "kb": 2048},
	    {"path": "status/404"}, {"path": "status/204"}, {"path": "nope"}]}')});
$node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')");
is(query("SELECT output -> 'body' FROM batchflow.items WHERE run_id = $run AND idx = 0"), '"hello"', 'text body stored as a JSON string');
is(query("SELECT output -> 'headers' ->> 'content-type' FROM batchflow.items WHERE run_id = $run AND idx = 0"), 'text/plain', 'headers stored, names lower case');
is(query("SELECT output ->> 'status' FROM batchflow.items WHERE run_id = $run AND idx = 0"), '200', 'status stored');
is(query("SELECT jsonb_typeof(output -> 'body') FROM batchflow.items WHERE run_id = $run AND idx = 1"), 'object', 'JSON body stored as JSON');
is(query("SELECT length(output ->> 'body') || ' ' || (output ->> 'truncated') FROM batchflow.items WHERE run_id = $run AND idx = 2"),
	'1048576 true', 'a 2 MB body is cut at batchflow.http_max_response_size (1 MB) and marked truncated');
is(query("SELECT status || ' ' || error FROM batchflow.items WHERE run_id = $run AND idx = 3"),
	"failed GET $base/status%2F404?kb= returned HTTP status 404: status 404", 'a 404 fails with status and body');
is(query("SELECT status || ' ' || (output -> 'body') FROM batchflow.items WHERE run_id = $run AND idx = 4"),
	'succeeded null', 'a 204 succeeds with a null body');
is(query("SELECT status FROM batchflow.items WHERE run_id = $run AND idx = 5"), 'failed', 'unknown path: 404 fails');

# A body does not change the method: GET with a body stays GET.
register('getbody', q{"loopType": "sequential"},
	qq{[{"id": "call", "type": "activity", "activity": "http", "method": "GET", "url": "$base/echo", "body": {"q": "{{item}}"}}]});
$run = run_items('getbody', '["x"]');
is(query("SELECT (output -> 'body' ->> 'method') || ' ' || (output -> 'body' ->> 'body') FROM batchflow.items WHERE run_id = $run"),
	'GET {"q": "x"}', 'a GET with a body is sent as GET, with the body');

# 8. SQL, then HTTP, then SQL in one item: each child gets the previous one's output.
query('CREATE TABLE mixed_sink (idx int PRIMARY KEY, sent jsonb, status int)');
register('mixed', q{"loopType": "parallel", "concurrency": 3},
	qq{[{"id": "prepare", "type": "activity", "activity": "sql", "sql": "SELECT jsonb_build_object('n', \$2 * 10)"},
	    {"id": "call", "type": "activity", "activity": "http", "method": "PUT", "url": "$base/echo", "body": {"item": "{{item}}"}},
	    {"id": "store", "type": "activity", "activity": "sql",
	     "sql": "INSERT INTO mixed_sink VALUES (\$2, (\$3 -> 'prev' -> 'body' ->> 'body')::jsonb, (\$3 -> 'prev' ->> 'status')::int) RETURNING status"}]});
$run = run_items('mixed', '[{"k": 1}, {"k": 2}, {"k": 3}, {"k": 4}, {"k": 5}]');
is(query('SELECT count(*) FROM mixed_sink WHERE status = 200'), 5, 'the last SQL child stored every HTTP result');
is(query(q{SELECT sent -> 'item' ->> 'k' FROM mixed_sink WHERE idx = 3}), '4', 'the request body carried the item');
is(query("SELECT string_agg(DISTINCT output::text, ',') FROM batchflow.items WHERE run_id = $run"), '200',
	'the item output is the last child\'s');

# 9. A sequential HTTP loop runs in index order.
server('/reset');
register('seq', q{"loopType": "sequential"},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms=20&i={{index}}"}]});
$run = run_items('seq', '[' . join(',', 1 .. 10) . ']');
is(server('/stats')->{peak}, 1, 'a sequential loop has one request at a time');
is(query("SELECT bool_and(f < s) FROM (SELECT finished_at AS f, lead(started_at) OVER (ORDER BY idx) AS s FROM batchflow.items WHERE run_id = $run) x"),
	't', 'each item started after the previous one finished');

# 10. SIGTERM the worker holding requests in flight: the launcher re-queues
# its items, the run completes, every item succeeded exactly once (HTTP is
# at-least-once: the server may see a request again, with the same key).
server('/reset');
register('killed', q{"loopType": "parallel", "concurrency": 10},
	qq{[{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms=300"}]});
$run = $node->safe_psql('postgres',
	q{SELECT bf_start('killed', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 60) g)))});
ok($node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM batchflow.item WHERE run_id = $run AND status = 'running' AND worker_pid IS NOT NULL"),
	'items are in flight');
my @pids = split /\n/, query("SELECT DISTINCT worker_pid FROM batchflow.item WHERE run_id = $run AND status = 'running'");
my $log_offset = -s $node->logfile;
is(kill('TERM', @pids), scalar(@pids), 'SIGTERM sent to the workers with requests in flight');
is($node->safe_psql('postgres', "SELECT bf_wait($run, '2 minutes')"), 'succeeded', 'the run still succeeds');
ok($node->log_contains('re-queued \d+ HTTP items of workers that exited', $log_offset),
	'the launcher re-queued the dead worker\'s items');
is(query("SELECT count(*) FROM batchflow.items WHERE run_id = $run AND status = 'succeeded'"), 60,
	'every item succeeded once');
$stats = server('/stats');
cmp_ok($stats->{paths}{'/sleep'}, '>=', 60, "the server saw every item at least once ($stats->{paths}{'/sleep'} requests)");
is(scalar(keys %{ $stats->{keys} }), 60, 'repeated requests carried the same idempotency key');
# (The server may briefly see more than 10 requests here: those of the dead
# worker keep sleeping on the server after their client is gone.)

$node->stop;
done_testing();
