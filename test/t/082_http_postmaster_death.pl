# A worker driving HTTP requests notices the postmaster's death: it waits
# on its latch, the requests' sockets and the postmaster together, so it
# exits at once rather than when its requests end.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $port = start_http_server();
like($port, qr/^\d+$/, "the test HTTP server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";

my $node = crash_node('http_pm_death', "batchflow.max_workers = 2\n");
sub query { return $node->safe_psql('postgres', $_[0]); }

# Requests that take a minute, two per worker.
query(qq{SELECT bf_register('slow', \$j\${"nodes": [{"id": "each", "type": "loop",
  "loopType": "parallel", "concurrency": 4, "inputSource": {"variable": "items"},
  "children": [{"id": "call", "type": "activity", "activity": "http",
                "url": "$base/sleep?ms=60000", "timeoutMs": 120000}]}]}\$j\$)});
query(q{SELECT bf_start('slow', '{"items": [1, 2, 3, 4]}')});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM batchflow.item WHERE status = 'running'}),
	'four requests are in flight');
# The second worker of the pool may still be starting (one worker can
# drive all four requests): wait for both before the postmaster dies.
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'the pool has its two workers');
my @pids = split /\n/, query(
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'batchflow worker' ORDER BY pid});
is(scalar(@pids), 2, 'two workers drive them');

$node->kill9;
my $t0 = time();
my @alive = @pids;
while (@alive && time() - $t0 < 20)
{
	sleep(0.1);
	@alive = grep { kill(0, $_) } @alive;
}
my $took = time() - $t0;
is(scalar(@alive), 0, 'every worker exited after the postmaster died');
cmp_ok($took, '<', 10, sprintf('within 10 s (%.1f s), not when its requests end (60 s)', $took));
kill('KILL', @alive) if @alive;

done_testing();
