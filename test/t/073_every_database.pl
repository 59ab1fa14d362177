# One pool of workers serves every database that has the extension.
#
# With batchflow.database_name unset, three databases with the extension
# run at once, all served; a fourth database where CREATE EXTENSION runs
# while the server runs is served within 10 seconds, with no restart (the
# time is measured and printed).  Each database sees only its own items in
# batchflow.active_items().  A busy database can be dropped (its workers
# hand their slots back first), an idle one holds no worker, and neither
# does a database without the extension.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('every_db');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.max_workers = 6
batchflow.worker_idle_timeout = '2s'
max_worker_processes = 16
});
$node->start;

is($node->safe_psql('postgres', 'SHOW batchflow.database_name'), '',
	'batchflow.database_name is empty by default: every database is served');

my @dbs = qw(db_a db_b db_c);
foreach my $db (@dbs)
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql(
		$db, q{
CREATE EXTENSION batchflow;
CREATE TABLE sink (item int NOT NULL UNIQUE, db text NOT NULL DEFAULT current_database(),
                   pid int NOT NULL DEFAULT pg_backend_pid());
SELECT bf_register('fill', '{"nodes": [
  {"id": "fill", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "items"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink (item) SELECT ($1)::int FROM pg_sleep(0.02) RETURNING item"}]}]}');
});
}
$node->safe_psql('postgres', 'CREATE DATABASE no_extension');

# Runs in the three databases at once.
my %run;
foreach my $db (@dbs)
{
	$run{$db} = $node->safe_psql($db,
		q{SELECT bf_start('fill', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 150) g)))});
}

# While they run, each database sees only its own executing items.
ok( $node->poll_query_until(
		'db_a', q{SELECT count(*) > 0 FROM batchflow.active_items()}),
	'db_a has items executing');
foreach my $db (@dbs)
{
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM batchflow.active_items() a
 WHERE a.pid NOT IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())}),
		'0', "$db: batchflow.active_items() shows only the workers of $db");
}
my $busy = $node->safe_psql(
	'postgres', q{
SELECT string_agg(DISTINCT datname, ',' ORDER BY datname) FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker'});
like($busy, qr/db_a/, "workers are connected to the databases with work ($busy)");

foreach my $db (@dbs)
{
	is($node->safe_psql($db, "SELECT bf_wait($run{$db}, '2 minutes')"),
		'succeeded', "$db: its run succeeds");
	is($node->safe_psql($db, 'SELECT count(*), count(DISTINCT item), min(db), max(db) FROM sink'),
		"150|150|$db|$db", "$db: every item once, executed in $db");
}
cmp_ok(
	$node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'<=', 6, 'never more workers than batchflow.max_workers');

# A fourth database, while the server runs: served within 10 s.
$node->safe_psql('postgres', 'CREATE DATABASE db_d');
$node->safe_psql('db_d', 'CREATE TABLE sink (item int NOT NULL UNIQUE)');
my $t0 = time();
$node->safe_psql(
	'db_d', q{
CREATE EXTENSION batchflow;
SELECT bf_register('one', '{"nodes": [
  {"id": "one", "type": "activity", "activity": "sql", "sql": "INSERT INTO sink VALUES (1) RETURNING item"}]}');
SELECT bf_start('one');
});
ok($node->poll_query_until('db_d', 'SELECT count(*) = 1 FROM sink'),
	'a run started right after CREATE EXTENSION in a new database is executed');
my $served = time() - $t0;
cmp_ok($served, '<', 10, sprintf('... within 10 s (%.3f s from CREATE EXTENSION to the first item done)', $served));
diag(sprintf('new database served %.3f s after CREATE EXTENSION', $served));

# A busy database can be dropped: its workers hand their slots back first.
$node->safe_psql('postgres', 'CREATE DATABASE db_busy');
$node->safe_psql(
	'db_busy', q{
CREATE EXTENSION batchflow;
SELECT bf_register('slow', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "items"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql", "sql": "SELECT pg_sleep(0.1)"}]}]}');
SELECT bf_start('slow', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 1000) g)));
});
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) > 0 FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND datname = 'db_busy' AND state = 'active'}),
	'db_busy has workers executing items');
$t0 = time();
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE db_busy');
is($rc, 0, sprintf('DROP DATABASE of the busy database succeeds (%.2f s)', time() - $t0))
  or diag($err);

# A database without the extension keeps no worker; idle databases give
# their workers back (batchflow.worker_idle_timeout = 2s).
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) = 0 FROM pg_stat_activity
 WHERE backend_type = 'batchflow worker' AND datname = 'no_extension'}),
	'no worker stays in a database without the extension');
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'batchflow worker'}),
	'once idle, every worker hands its slot back');

# An idle database can be dropped (no worker holds a connection to it),
# and a new run in another one is served again.
$node->safe_psql('postgres', 'DROP DATABASE db_c');
my $again = $node->safe_psql('db_a',
	q{SELECT bf_start('fill', '{"items": [1001, 1002, 1003]}')});
is($node->safe_psql('db_a', "SELECT bf_wait($again, '1 minute')"),
	'succeeded', 'after the idle period a new run is served at once');

$node->stop;
done_testing();
