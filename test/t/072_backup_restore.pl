# A backup taken while a run executes restores into another cluster, and
# the run carries on there with every item done exactly once.
#
# Cluster "source": workflows registered, finished runs (one succeeded,
# one with failed items and their errors), and a long run executing when
# pg_dump -Fc is taken.  Cluster "target": pg_restore --single-transaction
# into a fresh database, which the workers serve as soon as the restore
# (and its CREATE EXTENSION) commits.  Then:
#   - every workflow, version, run, loop, item and item error is there, and
#     the finished runs read as before (batchflow.runs, items, bf_progress,
#     bf_report, bf_summary);
#   - the interrupted run finishes; each of its items took effect exactly
#     once.  Each item's SQL records pg_current_xact_id() in an effects
#     table and returns it as the item's output: an effect and the item's
#     completion were committed by one transaction when the two agree, and
#     for the items completed on the target, the effect's transaction is
#     also the one that wrote the item's row (its xmin).  Items that were
#     executing when the dump was taken came back pending (their claim had
#     not committed) and ran once more on the target; items that had
#     committed did not;
#   - a new run starts, with an id after the restored ones (the sequences
#     came back with their values).

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A cluster (whose workers serve every database) with database $db.
sub serving_node
{
	my ($name, $db) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'batchflow'
batchflow.max_workers = 4
max_worker_processes = 16
});
	$node->start;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	return $node;
}

my $source = serving_node('source', 'app');
$source->safe_psql(
	'app', q{
CREATE EXTENSION batchflow;
CREATE SCHEMA shop;
CREATE TABLE shop.effects (item int NOT NULL UNIQUE, xid xid8 NOT NULL);
SELECT bf_register('quick', '{"nodes": [
  {"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1 AS one"}]}');
SELECT bf_register('quick', '{"nodes": [
  {"id": "two", "type": "activity", "activity": "sql", "sql": "SELECT 2 AS two"}]}');
SELECT bf_register('picky', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "errorStrategy": "continue", "inputSource": {"variable": "xs"},
   "children": [{"id": "check", "type": "activity", "activity": "sql",
                 "sql": "SELECT 100 / (($1)::int % 3)"}]}]}');
SELECT bf_register('fill', '{"nodes": [
  {"id": "fill", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "items"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO shop.effects SELECT ($1)::int, pg_current_xact_id() FROM pg_sleep(0.02) RETURNING xid"}]}]}');
});

my $quick = $source->safe_psql('app', q{SELECT bf_start('quick')});
my $picky = $source->safe_psql('app',
	q{SELECT bf_start('picky', '{"xs": [1, 2, 3, 4, 5, 6, 7, 8, 9]}')});
is($source->safe_psql('app', "SELECT bf_wait($quick, '1 minute')"), 'succeeded', 'a run succeeded');
is($source->safe_psql('app', "SELECT bf_wait($picky, '1 minute')"), 'succeeded',
	'a run with errorStrategy continue finished with failed items');

my $n    = 600;
my $fill = $source->safe_psql('app',
	qq{SELECT bf_start('fill', jsonb_build_object('items',
	     (SELECT jsonb_agg(g) FROM generate_series(1, $n) g)))});
ok($source->poll_query_until('app', 'SELECT count(*) >= 100 FROM shop.effects'),
	'the long run is under way');

my $dump = "${PostgreSQL::Test::Utils::tmp_check}/app.dump";
$source->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $source->connstr('app') ],
	'pg_dump -Fc taken while the run executes');
my $source_done = $source->safe_psql('app', 'SELECT count(*) FROM shop.effects');
cmp_ok($source_done, '<', $n, "the run was still executing after the dump ($source_done of $n done)");

# What the source says about everything that does not change any more.
my %queries = (
	counts => q{
SELECT (SELECT count(*) FROM batchflow.workflow), (SELECT count(*) FROM batchflow.workflow_version),
       (SELECT count(*) FROM batchflow.run), (SELECT count(*) FROM batchflow.loop),
       (SELECT count(*) FROM batchflow.item), (SELECT count(*) FROM batchflow.item_error)},
	finished_runs => qq{
SELECT id, workflow, version, status, input, started_at, finished_at, error
  FROM batchflow.runs WHERE id IN ($quick, $picky) ORDER BY id},
	finished_items => qq{
SELECT run_id, loop_id, idx, item, status, attempts, started_at, finished_at, output, error
  FROM batchflow.items WHERE run_id IN ($quick, $picky) ORDER BY run_id, loop_id, idx},
	progress => qq{
SELECT loop_id, status, total, completed, failed, active, percent
  FROM bf_progress($picky) ORDER BY loop_id},
	report  => "SELECT * FROM bf_report($picky) ORDER BY loop_id, idx",
	summary => "SELECT * FROM bf_summary($picky)",
	errors  => q{
SELECT run_id, idx, attempt, sqlstate, error, failed_at FROM batchflow.item_error
 ORDER BY run_id, idx, attempt});
my %before = map { $_ => $source->safe_psql('app', $queries{$_}) } keys %queries;
like($before{counts}, qr/^3\|4\|3\|3\|\d+\|3$/, "source: 3 workflows, 4 versions, 3 runs, 3 loops, 3 errors ($before{counts})");
like($before{report}, qr/division by zero/, 'source: bf_report lists the failed items');

# Restore into a fresh database of another cluster, which the workers serve.
my $target = serving_node('target', 'restored');
$target->command_ok(
	[
		'pg_restore', '--single-transaction', '--exit-on-error',
		'-d', $target->connstr('restored'), $dump
	],
	'pg_restore --single-transaction into a fresh database of another cluster');

foreach my $q (sort keys %queries)
{
	is($target->safe_psql('restored', $queries{$q}), $before{$q}, "restored: $q as on the source");
}

# The interrupted run finishes on the target, every item exactly once.
is($target->safe_psql('restored', "SELECT bf_wait($fill, '3 minutes')"),
	'succeeded', 'the interrupted run finishes on the target');
is( $target->safe_psql(
		'restored', 'SELECT count(*), count(DISTINCT item), min(item), max(item) FROM shop.effects'),
	"$n|$n|1|$n",
	"one effect per item: $n rows, no duplicates");
is( $target->safe_psql(
		'restored', qq{
SELECT count(*) FILTER (WHERE i.status = 'succeeded'),
       count(*) FILTER (WHERE i.attempts = 1),
       count(*) FILTER (WHERE e.xid::text = i.output #>> '{}')
  FROM batchflow.item i LEFT JOIN shop.effects e ON e.item = (i.item)::int
 WHERE i.run_id = $fill}),
	"$n|$n|$n",
	'every item succeeded at its first attempt, its effect committed by its completion transaction');
my $on_target = $target->safe_psql(
	'restored', qq{
SELECT count(*) FROM batchflow.item i JOIN shop.effects e ON e.item = (i.item)::int
 WHERE i.run_id = $fill AND e.xid::text::bigint % 4294967296 = i.xmin::text::bigint});
cmp_ok($on_target, '>=', $n - $source_done,
	"$on_target items completed on the target, each in the transaction that wrote its effect");
is($target->safe_psql('restored', "SELECT count(*) FROM batchflow.item_error WHERE run_id = $fill"),
	'0', 'no attempt of the interrupted run failed');
is( $target->safe_psql(
		'restored', qq{
SELECT status, total, completed, failed, percent FROM bf_progress($fill)}),
	"succeeded|$n|$n|0|100.0",
	'its progress counts every item once');

# New runs start, with ids after the restored ones.
my $new = $target->safe_psql('restored', q{SELECT bf_start('quick')});
cmp_ok($new, '>', $fill, "a new run gets the next id ($new)");
is($target->safe_psql('restored', "SELECT bf_wait($new, '1 minute')"),
	'succeeded', 'a new run of a restored workflow succeeds');
is( $target->safe_psql('restored', "SELECT version FROM batchflow.runs WHERE id = $new"),
	'2', 'it runs the newest restored version');
my $version = $target->safe_psql('restored',
	q{SELECT bf_register('quick', '{"nodes": [{"id": "three", "type": "activity", "activity": "sql", "sql": "SELECT 3"}]}')});
cmp_ok($version, '>', 4, "a new version gets the next id ($version)");

$source->stop;
$target->stop;
done_testing();
