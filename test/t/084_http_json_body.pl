# What a JSON response body becomes in the item's output (src/activity_http.c).
#
# A response is read outside any transaction, where PostgreSQL 15 can
# neither catch an input error in a subtransaction nor ask jsonb_in for a
# soft error: the worker must find, before calling jsonb_in, every body
# that jsonb_in or the JSON lexer would refuse with an ERROR, and keep it
# as text.  An ERROR there abandons the worker's whole HTTP batch and
# re-queues its items, which get the same answer again: the run never
# finishes and every request of the batch is sent again and again.
#
# 1. Numbers JSON allows but numeric cannot hold (1e131072, 1e-16384) are
#    kept as text; the largest and smallest it holds stay JSON numbers.
#    Each request is sent exactly once.
# 2. Arrays nested deeper than the parsers' stack allows are kept as text.
# 3. In a LATIN1 database, a \u escape of a character LATIN1 lacks (the
#    lexer converts escapes to the database encoding and raises an ERROR
#    when it cannot) is kept as text.  Before the check that came with
#    the fix of defect 3, the lexer ran unguarded and this run never
#    finished; the \u0000 test in 083 passed with the old code too.

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

# Register a loop that calls /json?k=v for each item {"k": ..., "v": ...}.
sub register_calls
{
	my ($node, $name) = @_;
	$node->safe_psql('postgres', qq{SELECT bf_register('$name', \$j\${"nodes": [{"id": "each", "type": "loop",
  "loopType": "parallel", "concurrency": 4, "inputSource": {"variable": "items"},
  "children": [{"id": "call", "type": "activity", "activity": "http", "url": "$base/json?{{item.k}}={{item.v}}"}]}]}\$j\$)});
}

# Start a run over the queries "k=v", wait for it, and return its status
# and "type:body" of each item's output body, in item order.
sub run_calls
{
	my ($node, $name, @queries) = @_;
	my $items = join(', ', map { my ($k, $v) = split /=/, $_, 2; "{\"k\": \"$k\", \"v\": \"$v\"}" } @queries);
	my $run = $node->safe_psql('postgres', qq{SELECT bf_start('$name', '{"items": [$items]}')});
	my $status = $node->safe_psql('postgres', "SELECT bf_wait($run, '30 seconds')");
	my $bodies = $node->safe_psql('postgres',
		qq{SELECT string_agg(jsonb_typeof(output -> 'body') || ':' ||
		                     CASE jsonb_typeof(output -> 'body')
		                          WHEN 'string' THEN left(output ->> 'body', 40)
		                          ELSE left((output -> 'body')::text, 40) END, ' | ' ORDER BY idx)
		     FROM batchflow.item WHERE run_id = $run});
	return ($status, $bodies);
}

my $node = crash_node('http_json');
register_calls($node, 'numbers');
server_json($base, '/reset');

# 1. Numbers at and past numeric's limits.
my ($status, $bodies) = run_calls($node, 'numbers',
	'n=1e131072', 'n=1e131071', 'n=-1e-16384', 'n=1e-16383', 'n=0e-16384', 'n=42.5');
is($status, 'succeeded', 'a run whose responses hold numbers numeric cannot hold succeeds');
my @b = split / \| /, $bodies;
is($b[0], 'string:{"n": 1e131072}', '1e131072 (past numeric\'s largest weight) is kept as text');
like($b[1], qr/^object:\{"n": 1000000000/, '1e131071 stays a JSON number');
is($b[2], 'string:{"n": -1e-16384}', '-1e-16384 (scale past 16383) is kept as text');
like($b[3], qr/^object:\{"n": 0\.0000000/, '1e-16383 stays a JSON number');
is($b[4], 'string:{"n": 0e-16384}', 'a zero with a scale past 16383 is kept as text');
is($b[5], 'object:{"n": 42.5}', 'an ordinary number stays a JSON number');
is(server_json($base, '/stats')->{paths}{'/json'}, 6, 'each request was sent once');

# 2. Nesting.
($status, $bodies) = run_calls($node, 'numbers', 'depth=1000', 'depth=100000');
is($status, 'succeeded', 'a run whose responses nest 100,000 arrays deep succeeds');
@b = split / \| /, $bodies;
like($b[0], qr/^array:\[\[\[\[/, '1000 nested arrays stay JSON');
like($b[1], qr/^string:\[\[\[\[/, '100,000 nested arrays are kept as text');
$node->stop;

# 3. A LATIN1 database.
my $latin = PostgreSQL::Test::Cluster->new('http_latin1');
$latin->init(extra => [ '--encoding=LATIN1', '--locale=C' ]);
$latin->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
max_worker_processes = 32
});
$latin->start;
is($latin->safe_psql('postgres', 'SHOW server_encoding'), 'LATIN1', 'the database is LATIN1');
$latin->safe_psql('postgres', 'CREATE EXTENSION batchflow');
register_calls($latin, 'escapes');
($status, $bodies) = run_calls($latin, 'escapes', 's=\\\\u20ac', 's=plain');
is($status, 'succeeded', 'a run whose responses escape a character LATIN1 lacks succeeds');
@b = split / \| /, $bodies;
is($b[0], 'string:{"s": "\u20ac"}', 'the \\u20ac body is kept as text');
is($b[1], 'object:{"s": "plain"}', 'a body without escapes stays JSON');
$latin->stop;

done_testing();
