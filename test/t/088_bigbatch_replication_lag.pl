# maxReplicationLag: a lagging standby holds the loop back, and the loop
# goes on once the standby has caught up.
#
# A streaming standby applies WAL 3 s late (recovery_min_apply_delay), so
# as soon as the loop's items write, pg_stat_replication shows a replay_lag
# of about 3 s, above the loop's limit of 1 s: no new item starts, and
# bf_progress says 'throttled'.  With nothing written the standby catches
# up, its replay_lag is cleared, the loop goes on, and the run succeeds.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $primary = PostgreSQL::Test::Cluster->new('lag_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
max_worker_processes = 32
wal_receiver_status_interval = 1s
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION batchflow');
$primary->backup('b');

my $standby = PostgreSQL::Test::Cluster->new('lag_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf(
	'postgresql.conf', q{
recovery_min_apply_delay = '3s'
wal_receiver_status_interval = 1s
});
$standby->start;
ok( $primary->poll_query_until(
		'postgres', "SELECT count(*) = 1 FROM pg_stat_replication WHERE state = 'streaming'"),
	'the standby streams');

$primary->safe_psql(
	'postgres', q{
CREATE TABLE written (item int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
SELECT bf_register('careful', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "maxReplicationLag": "1s", "inputSource": {"variable": "items"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO written (item) SELECT ($1)::int FROM pg_sleep(0.1)"}]}]}');
});
my $run = $primary->safe_psql('postgres',
	q{SELECT bf_start('careful', jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, 40) g)))});

# Held back: throttled while the standby's replay_lag is above 1 s.
my ($held, $lag, $done_then) = (0, '', 0);
for (my $i = 0; $i < 600 && !$held; $i++)
{
	my $row = $primary->safe_psql(
		'postgres', qq{
SELECT p.status, (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication),
       (SELECT count(*) FROM written)
  FROM bf_progress($run) p});
	my ($status, $l, $d) = split /\|/, $row;
	if ($status eq 'throttled' && $l ne '' && $l > 1)
	{
		($held, $lag, $done_then) = (1, $l, $d);
	}
	else
	{
		usleep(50_000);
	}
}
ok($held, "the loop is throttled while the standby lags (replay_lag $lag s)");
cmp_ok($done_then, '<', 40, "the loop was held back before its end ($done_then of 40 items done)");

# Nothing starts while held: over the next half second at most the items
# already executing (cap 2) end.
usleep(500_000);
my $done_later = $primary->safe_psql('postgres', 'SELECT count(*) FROM written');
cmp_ok($done_later - $done_then, '<=', 2, 'no new item starts while the standby lags');

is($primary->safe_psql('postgres', "SELECT bf_wait($run, '2 minutes')"),
	'succeeded', 'the loop goes on once the standby catches up, and the run succeeds');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM written'), '40', 'every item ran');

$standby->stop;
$primary->stop;
done_testing();
