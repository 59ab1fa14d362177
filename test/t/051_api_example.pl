# The fourth example of issue 6, examples/api_batch.sql, end to end: the
# "API batch processor" pushes 500 generated orders to test/http_server.py's
# /flaky endpoint on 127.0.0.1 at concurrency 5, with errorStrategy retry
# and maxRetries 3.  The file is loaded exactly as examples/README.md says
# (psql -v api=... -f examples/api_batch.sql); the test then checks what
# the server saw against what the database recorded.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
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

my $node = crash_node('api_example');

sub query { return $node->safe_psql('postgres', $_[0]); }

# Load the example with one command, the base URL as a psql variable.
my $example = "$FindBin::RealBin/../../examples/api_batch.sql";
my @psql = ($node->installed_command('psql'), '-X', '-h', $node->host, '-p', $node->port,
	'-d', 'postgres');
my ($out, $err) = ('', '');
server('/reset');
ok(IPC::Run::run([ @psql, '-v', "api=$base", '-f', $example ], '>', \$out, '2>', \$err),
	'psql -v api=... -f examples/api_batch.sql exits 0');
is($err, '', 'no error or warning while loading the example');
like($out, qr/^\s*status\s*\n-+\n\s*succeeded\s*$/m, 'the example waited for its run: succeeded');

my $run = query(q{SELECT max(id) FROM batchflow.runs WHERE workflow = 'example_api_batch'});
my $stats = server('/stats');
my $injected = query('SELECT sum(fails) FROM example_api.fault_plan');

is(query("SELECT count(*) FROM batchflow.items WHERE run_id = $run AND loop_id = 'push' AND status = 'succeeded'"),
	500, '500 items succeeded');
is(query("SELECT count(*) FROM batchflow.items WHERE run_id = $run AND loop_id = 'push' AND status <> 'succeeded'"),
	0, 'no item failed or was skipped');
is($injected, 85, 'the fault plan injects 85 failures (50 once, 10 twice, 5 three times)');
is($stats->{paths}{'/flaky'}, 500 + $injected,
	"server request count = 500 + injected failures ($stats->{paths}{'/flaky'})");
is($stats->{peak}, 5, 'server-observed peak concurrency is exactly 5');
is(query("SELECT count(*) FROM batchflow.item_error WHERE run_id = $run"), $injected,
	'every injected failure is one recorded failed attempt');
is(query("SELECT sum(attempts) FROM batchflow.items WHERE run_id = $run AND loop_id = 'push'"),
	500 + $injected, 'attempts add up to the requests the server saw');
is(query(q{SELECT count(*) FROM example_api.sync_log s LEFT JOIN example_api.fault_plan f USING (order_id)
            WHERE s.http_status = 200 AND s.remote_attempt = 1 + coalesce(f.fails, 0)}),
	500, 'the trailing SQL child logged each order once, with the attempt the API accepted');
is(query(q{SELECT count(*) FROM batchflow.items i JOIN example_api.fault_plan f ON f.order_id = (i.item ->> 'order_id')::int
            WHERE i.run_id = } . $run . q{ AND i.attempts <> f.fails + 1}),
	0, 'each planned order took exactly its planned failures plus one attempt');

# One Idempotency-Key per order, reused by every retry of that order.
is(scalar(keys %{ $stats->{keys} }), 500, '500 distinct idempotency keys');
my %per_key_count;
$per_key_count{$_}++ for values %{ $stats->{keys} };
is_deeply(\%per_key_count, { 1 => 435, 2 => 50, 3 => 10, 4 => 5 },
	'retried orders reused their key (435 once, 50 twice, 10 three times, 5 four times)');
like((keys %{ $stats->{keys} })[0], qr/^batchflow-$run-push-\d+-post$/,
	'keys read batchflow-<run>-<loop>-<index>-<child>');
like(query("SELECT error FROM batchflow.item_error WHERE run_id = $run ORDER BY idx, attempt LIMIT 1"),
	qr{^POST http://127\.0\.0\.1:$port/flaky\?id=$run-3&fails=1&ms=20 returned HTTP status 500: flaky failure 1 of $run-3$},
	'a failed attempt records the method, url, status and body');

# The file can be loaded again: a new run, the endpoint fails each order afresh.
server('/reset');
ok(IPC::Run::run([ @psql, '-v', "api=$base", '-f', $example ], '>', \$out, '2>', \$err),
	'the example loads a second time');
is(server('/stats')->{paths}{'/flaky'}, 585, 'the second load makes 585 requests as well');

# Without the variable it stops at once with a hint.
ok(!IPC::Run::run([ @psql, '-f', $example ], '>', \$out, '2>', \$err),
	'without -v api the example fails');
like($err, qr/psql variable "api" is not set.*HINT:  Give the base URL/s, 'and says why');

$node->stop;
done_testing();
