# A query source survives a server crash in the middle of materialisation.
#
# A parallel loop is fed by a query over 200,000 rows, read slowly enough
# (a short sleep every 1,000 rows) that the server can be stopped with
# 'immediate' while the workers are still materialising items, and while
# items of the chunks already committed are executing.  After the restart
# materialisation resumes where its last committed chunk ended: every row
# becomes exactly one item, and every item is executed exactly once (a
# UNIQUE sink, checked row by row against the source table).

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $n    = 200000;
my $node = crash_node('bigbatch_query_crash');

$node->safe_psql(
	'postgres', qq{
CREATE TABLE src (id int PRIMARY KEY, payload text NOT NULL);
INSERT INTO src SELECT g, md5(g::text) FROM generate_series(1, $n) g;
CREATE TABLE sink (id int NOT NULL UNIQUE, payload text NOT NULL);
SELECT bf_register('bigq', \$j\${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 10,
   "inputSource": {"query": "SELECT id, payload FROM src WHERE CASE WHEN id % 1000 = 0 THEN pg_sleep(0.03) IS NOT NULL ELSE true END"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO sink VALUES ((\$1 ->> 'id')::int, \$1 ->> 'payload')"}]}]}\$j\$);
});
my $run = $node->safe_psql('postgres', "SELECT bf_start('bigq')");

# bf_start created the loop but no item: the workers materialise them.
is( $node->safe_psql(
		'postgres', "SELECT l.total, f.next_idx FROM batchflow.loop l JOIN batchflow.loop_fill f ON f.loop_ref = l.id WHERE l.run_id = $run"),
	'0|0', 'bf_start returns with the loop started and no item materialised yet');

# Wait until materialisation is between 15% and 70% done, items executing.
ok( $node->poll_query_until(
		'postgres', qq{
SELECT f.next_idx >= $n * 0.15 AND (SELECT count(*) FROM sink) > 0
  FROM batchflow.loop_fill f WHERE f.run_id = $run}),
	'materialisation is under way and items are executing');
# The drainer holds the query's snapshot but no lock on batchflow's tables:
# DDL on them (ALTER EXTENSION UPDATE) must not queue behind it while the
# workers that take its rows queue behind that DDL.
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE a.backend_type = 'batchflow drain'
   AND l.relation IN (SELECT oid FROM pg_class WHERE relnamespace = 'batchflow'::regnamespace)}),
	'0', 'the drainer holds no lock on batchflow tables while it streams');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow drain'}),
	'1', 'one drainer streams the rows');
my $before = $node->safe_psql('postgres',
	"SELECT next_idx FROM batchflow.loop_fill WHERE run_id = $run");
cmp_ok($before, '<', $n * 0.7, "still materialising when the server stops ($before rows in)");

$node->stop('immediate');
$node->start;

is($node->safe_psql('postgres', "SELECT bf_wait($run, '3 minutes')"),
	'succeeded', 'the run resumes after the crash and succeeds');

is( $node->safe_psql(
		'postgres', "SELECT l.total FROM batchflow.loop l WHERE l.run_id = $run"),
	$n, "the loop's total is exact: $n items");
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM batchflow.loop_fill WHERE run_id = $run"),
	'0', 'materialisation finished');

# Every row of src is exactly one item, with its own values.
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*), count(DISTINCT i.item), count(DISTINCT i.idx), min(i.idx), max(i.idx)
  FROM batchflow.items i WHERE i.run_id = $run}),
	"$n|$n|$n|0|" . ($n - 1),
	'one item per row: no duplicate item, no gap in the indexes');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*)
  FROM src s
  FULL JOIN (SELECT i.item, count(*) AS n FROM batchflow.items i
              WHERE i.run_id = $run GROUP BY i.item) i
    ON i.item = jsonb_build_object('id', s.id, 'payload', s.payload)
 WHERE s.id IS NULL OR i.n IS DISTINCT FROM 1}),
	'0', 'every row of the source is exactly one item');

# Every item executed exactly once.
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE attempts = 1)
  FROM batchflow.items WHERE run_id = $run}),
	"$n|$n", 'every item succeeded, with one attempt');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM src s FULL JOIN sink k USING (id)
 WHERE k.id IS NULL OR s.id IS NULL OR k.payload <> s.payload}),
	'0', 'every row has exactly its one effect in the sink (UNIQUE), with its own payload');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sink'), $n, "$n effects");

$node->stop;
done_testing();
