# Loading batchflow, with and without shared_preload_libraries.
#
# Without the library preloaded, CREATE EXTENSION succeeds (the tables and
# functions are useful on their own), but the library warns, with its
# SQLSTATE, a detail and a hint, as soon as a session loads it: the runs it
# accepts will not be executed.  Every later session that calls a bf_*
# function is told again, and no batchflow process runs.
#
# With the library preloaded, the launcher and its pool of item workers
# show up in pg_stat_activity, \dx+ lists the extension's objects, a
# workflow runs to succeeded, and all of it still works after a restart.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $warning = <<'EOT';
WARNING:  55000: batchflow is not loaded through shared_preload_libraries
DETAIL:  Runs can be registered and started, but no background worker will execute their items.
HINT:  Add 'batchflow' to shared_preload_libraries in postgresql.conf and restart the server.
EOT

# The server messages psql printed on stderr, without psql's "psql:<stdin>:N: "
# prefixes and the LOCATION lines of VERBOSITY verbose.
sub server_messages
{
	my ($stderr) = @_;
	my @lines = grep { !/^LOCATION:/ } split /\n/, $stderr;
	s/^psql:<stdin>:\d+: // for @lines;
	return join('', map { "$_\n" } @lines);
}

# A workflow with a top-level SQL activity whose output feeds a parallel loop
# that inserts one row per item into sink.
my $definition = q{{"nodes": [
  {"id": "pick", "type": "activity", "activity": "sql",
   "sql": "SELECT jsonb_agg(g) FROM generate_series(1, 20) g", "output": "numbers"},
  {"id": "put", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "numbers"},
   "children": [{"id": "insert", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink (n) VALUES (($1)::int) RETURNING n"}]}]}};

###########################################################################
# (a) Not preloaded.
###########################################################################

my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;

my ($ret, $stdout, $stderr) = $plain->psql(
	'postgres', q{\set VERBOSITY verbose
CREATE EXTENSION batchflow;});
is($ret, 0, 'CREATE EXTENSION succeeds without shared_preload_libraries');
is(server_messages($stderr), $warning,
	'CREATE EXTENSION warns that the library is not preloaded, with SQLSTATE 55000, a detail and a hint');
is( $plain->safe_psql(
		'postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'batchflow'}),
	'0.2.0',
	'the extension is installed');

$plain->safe_psql('postgres', 'CREATE TABLE sink (n int PRIMARY KEY)');
($ret, $stdout, $stderr) = $plain->psql(
	'postgres', qq{\\set VERBOSITY verbose
SELECT bf_register('numbers', '$definition') > 0;
SELECT bf_start('numbers');});
is($ret, 0, 'a workflow can be registered and started');
is(server_messages($stderr), $warning,
	'a new session that calls bf_* is warned once more');
my ($registered, $run) = split /\n/, $stdout;
is($registered, 't', 'bf_register returns a version id');

# bf_wait fails at once (55000) instead of waiting out its timeout.
my $t0 = time();
my ($wait_rc, $wait_out, $wait_err) = $plain->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT bf_wait($run, '30 seconds')");
cmp_ok(time() - $t0, '<', 10, 'with no worker, bf_wait of a 30 s timeout returns at once');
like($wait_err, qr/ERROR:  55000: run $run cannot finish: batchflow is not loaded through shared_preload_libraries/,
	'... with an error (55000) that says why');
like($wait_err, qr/HINT:  Add 'batchflow' to shared_preload_libraries/, '... and what to do');
is($plain->safe_psql('postgres', "SELECT status FROM batchflow.runs WHERE id = $run"),
	'running', 'with no worker, the run stays running');
is( $plain->safe_psql(
		'postgres', "SELECT status, count(*) FROM batchflow.items WHERE run_id = $run GROUP BY status"),
	'pending|1',
	'its first item is still pending');
is($plain->safe_psql('postgres', 'SELECT count(*) FROM sink'),
	'0', 'nothing was executed');
is( $plain->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'batchflow%'}),
	'0',
	'no batchflow process runs');
$plain->stop;

###########################################################################
# (b) Preloaded.
###########################################################################

my $node = PostgreSQL::Test::Cluster->new('preloaded');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
batchflow.max_workers = 3
max_worker_processes = 32
});
$node->start;

($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE EXTENSION batchflow');
is($ret, 0, 'CREATE EXTENSION succeeds with the library preloaded');
is($stderr, '', 'and says nothing');

# The launcher (connected to no database) and batchflow.max_workers item
# workers, connected to the database named by batchflow.database_name.
my $pool_query = q{
SELECT backend_type, datname, count(*) FROM pg_stat_activity
 WHERE backend_type LIKE 'batchflow%'
 GROUP BY backend_type, datname ORDER BY backend_type};
my $pool_expected = "batchflow launcher||1\nbatchflow worker|postgres|3";
ok( $node->poll_query_until('postgres', $pool_query, $pool_expected),
	'pg_stat_activity shows one launcher (no database) and 3 item workers on database postgres');

# \dx+ lists the extension's objects.
{
	my ($dx, $dx_err) = run_command(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', '\dx+ batchflow' ]);
	is($dx_err, '', '\dx+ batchflow runs without error');
	like($dx, qr/^\s*Objects in extension "batchflow"$/m, '\dx+ lists the objects of batchflow');
	for my $object (
		'schema batchflow',
		'function bf_register(text,jsonb)',
		'function bf_start(text,jsonb)',
		'function bf_wait(bigint,interval)',
		'function bf_cancel(bigint,boolean)',
		'function bf_retry(bigint)',
		'function bf_progress(bigint)',
		'function bf_report(bigint)',
		'table batchflow.workflow',
		'table batchflow.workflow_version',
		'table batchflow.run',
		'table batchflow.loop',
		'table batchflow.item',
		'table batchflow.item_error',
		'view batchflow.runs',
		'view batchflow.items')
	{
		like($dx, qr/^ \Q$object\E\s*$/m, "\\dx+ lists $object");
	}
}

# A workflow runs to succeeded.
$node->safe_psql('postgres', 'CREATE TABLE sink (n int PRIMARY KEY)');
$node->safe_psql('postgres', qq{SELECT bf_register('numbers', '$definition')});
$run = $node->safe_psql('postgres', q{SELECT bf_start('numbers')});
is($node->safe_psql('postgres', "SELECT bf_wait($run, '1 minute')"),
	'succeeded', 'a run of the workflow succeeds');
is($node->safe_psql('postgres', 'SELECT count(*), min(n), max(n) FROM sink'),
	'20|1|20', 'its loop inserted one row per item');
is( $node->safe_psql(
		'postgres', qq{
SELECT loop_id, status, count(*) FROM batchflow.items WHERE run_id = $run
 GROUP BY loop_id, status ORDER BY loop_id}),
	"pick|succeeded|1\nput|succeeded|20",
	'every item of the run succeeded');

# After a restart the pool is back and new runs still work.
$node->restart;
ok( $node->poll_query_until('postgres', $pool_query, $pool_expected),
	'after a restart, the launcher and its 3 workers are back');
is( $node->safe_psql(
		'postgres', "SELECT workflow, status FROM batchflow.runs WHERE id = $run"),
	'numbers|succeeded',
	'the finished run is still recorded');
$node->safe_psql('postgres', 'TRUNCATE sink');
my $run2 = $node->safe_psql('postgres', q{SELECT bf_start('numbers')});
isnt($run2, $run, 'a new run gets a new id');
is($node->safe_psql('postgres', "SELECT bf_wait($run2, '1 minute')"),
	'succeeded', 'a run started after the restart succeeds');
is($node->safe_psql('postgres', 'SELECT count(*), min(n), max(n) FROM sink'),
	'20|1|20', 'and inserted one row per item');

$node->stop;
done_testing();
