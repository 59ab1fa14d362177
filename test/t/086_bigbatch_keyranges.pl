# Key ranges: every key in exactly one range, computed as the loop goes.
#
# A table whose key has gaps (every 7th key missing, and a hole of 3,000
# keys) is backfilled with a keyRanges loop of size 500 at cap 4.  While the
# loop runs, rows are inserted behind the scan (into the gaps, below the
# ranges already handed out) and beyond the last key.  Afterwards every row
# of the table, old or new, lies in exactly one range; every original row
# was updated exactly once; the ranges hold about 500 rows each; and the
# ranges were computed a few at a time, never all up front.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('bigbatch_keyranges');

$node->safe_psql(
	'postgres', q{
CREATE TABLE t (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0, late boolean NOT NULL DEFAULT false);
INSERT INTO t (id) SELECT g FROM generate_series(1, 30000) g
 WHERE g % 7 <> 0 AND g NOT BETWEEN 10001 AND 13000;
SELECT bf_register('ranges', $j${"nodes": [
  {"id": "backfill", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"keyRanges": {"table": "public.t", "key": "id", "size": 500}},
   "children": [{"id": "bump", "type": "activity", "activity": "sql",
                 "sql": "UPDATE t SET v = v + 1 FROM pg_sleep(0.05) WHERE NOT late AND id >= ($1 ->> 'from')::bigint AND ($1 -> 'to' = 'null' OR id < ($1 ->> 'to')::bigint)"}]}]}$j$);
});
my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM t');
my $run  = $node->safe_psql('postgres', "SELECT bf_start('ranges')");

# While it runs: the ranges are materialised a few at a time.
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) >= 8 FROM batchflow.item i JOIN batchflow.loop l ON l.id = i.loop_ref WHERE l.run_id = $run AND i.status = 'succeeded'"),
	'items are executing');
my ($made, $filling) = split /\|/, $node->safe_psql(
	'postgres', qq{
SELECT l.total, EXISTS (SELECT 1 FROM batchflow.loop_fill f WHERE f.loop_ref = l.id)
  FROM batchflow.loop l WHERE l.run_id = $run});
is($filling, 't', 'the loop is still computing ranges');
cmp_ok($made, '<', int($rows / 500) - 4, "only some ranges exist so far ($made)");

# Rows inserted behind the scan (into gaps below the ranges handed out) and past the end.
$node->safe_psql(
	'postgres', q{
INSERT INTO t (id, late) SELECT g, true FROM generate_series(7, 2100, 7) g;
INSERT INTO t (id, late) SELECT g, true FROM generate_series(10001, 13000, 50) g;
INSERT INTO t (id, late) SELECT g, true FROM generate_series(40000, 40100) g;
});

is($node->safe_psql('postgres', "SELECT bf_wait($run, '3 minutes')"),
	'succeeded', 'the backfill succeeds');

my $ranges = qq{(SELECT (i.item ->> 'from')::bigint AS lo, (i.item ->> 'to')::bigint AS hi, i.idx
                  FROM batchflow.items i WHERE i.run_id = $run)};
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM t
 WHERE (SELECT count(*) FROM $ranges r WHERE t.id >= r.lo AND (r.hi IS NULL OR t.id < r.hi)) <> 1}),
	'0', 'every key, old or inserted during the run, lies in exactly one range');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM $ranges a JOIN $ranges b ON b.idx = a.idx + 1 WHERE a.hi IS DISTINCT FROM b.lo}),
	'0', 'the ranges are contiguous');
is( $node->safe_psql(
		'postgres', qq{SELECT count(*) FROM $ranges r WHERE r.hi IS NULL}),
	'1', 'only the last range is open-ended');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FILTER (WHERE v = 1), count(*) FILTER (WHERE v <> 1) FROM t WHERE NOT late}),
	"$rows|0", 'every original row was updated exactly once');
is( $node->safe_psql(
		'postgres', qq{
SELECT max(n), min(n) FILTER (WHERE NOT last) FROM (
  SELECT r.hi IS NULL AS last,
         (SELECT count(*) FROM t WHERE NOT t.late AND t.id >= r.lo AND (r.hi IS NULL OR t.id < r.hi)) AS n
    FROM $ranges r) s}),
	'500|500', 'each range held 500 of the original rows (the last one fewer)');

$node->stop;
done_testing();
