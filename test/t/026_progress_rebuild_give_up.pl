# A counter rebuild that gives up must not stop the workers from writing
# their counts (src/counter_rebuild.c, progress_shared.c).
#
# While a rebuild runs, workers count under the reconcile lock and keep
# their counts in shared memory instead of writing them to
# batchflow.progress_counter.  A rebuild gives up (to try again at the
# next sweep) when it cannot have its locks within 2 seconds; giving up
# must clear the "reconciling" flag, or every worker goes on not writing
# its counts until some later rebuild succeeds, which may be never.
#
# Here a session holds a row of batchflow.progress_counter of a running
# loop (an empty one, of a slot no worker has): every rebuild of the loop
# deletes that loop's rows, so it waits for the row and gives up, while the
# workers write their own rows undisturbed.  The rebuild is asked for the
# way a user asks for it: items finish while batchflow.track_progress is
# off (uncounted), then it is turned on.  While the row is held (no
# rebuild can succeed), the counts the workers write must keep growing
# after each give-up.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash qw(crash_node);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $node = crash_node(
	'rebuild_give_up', q{
batchflow.max_workers = 2
batchflow.poll_interval = '3s'
batchflow.progress_interval = '100ms'
batchflow.track_progress = off
});

sub query { return $node->safe_psql('postgres', $_[0]); }

query(q{
SELECT bf_register('slow_items', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "items"},
   "children": [{"id": "nap", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_sleep(0.02)"}]}]}');
});
my $run = query(q{SELECT bf_start('slow_items', jsonb_build_object('items',
    (SELECT jsonb_agg(g) FROM generate_series(1, 20000) g)))});
my $loop = query("SELECT id FROM batchflow.loop WHERE run_id = $run");

# Items finish uncounted (track_progress is off).
ok($node->poll_query_until('postgres',
		"SELECT count(*) >= 20 FROM batchflow.items WHERE run_id = $run AND status = 'succeeded'"),
	'items finish while track_progress is off');

# Hold an (empty) counter row of the loop, then turn counting on: the
# next sweep asks for a rebuild of every open loop, which waits for it.
query("INSERT INTO batchflow.progress_counter (loop_ref, slot, completed, failed, updated_at)
       VALUES ($loop, 1000, 0, 0, now())");
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe("SELECT 1 FROM batchflow.progress_counter WHERE loop_ref = $loop AND slot = 1000 FOR UPDATE");
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
query("ALTER SYSTEM SET batchflow.track_progress = on; SELECT pg_reload_conf()");

my $blocked = "(SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'batchflow worker' AND $holder_pid = ANY (pg_blocking_pids(pid)))";
ok($node->poll_query_until('postgres', "SELECT $blocked = 1"),
	'a rebuild waits for the held row');
ok($node->poll_query_until('postgres', "SELECT $blocked = 0"),
	'the rebuild gives up (lock_timeout) while the row is still held');

# No rebuild can succeed while the row is held; the workers must still
# write what they count.  With "reconciling" left set, the written counts
# stay where they were until the lock is released.
my $written = "SELECT coalesce(sum(completed), 0) FROM batchflow.progress_counter WHERE loop_ref = $loop";
my $before = query($written);
ok($node->poll_query_until('postgres', "SELECT ($written) > $before"),
	'after the rebuild gave up, workers write their counts again');
is($holder->query_safe("SELECT count(*) FROM batchflow.progress_counter WHERE loop_ref = $loop AND slot = 1000"),
	'1', 'the row was held all along (no rebuild could have succeeded)');

# Once the row is free, a rebuild succeeds and the counts are exact.
$holder->query_safe('COMMIT');
$holder->quit;
query("SELECT bf_cancel($run)");
is(query("SELECT bf_wait($run, '60 seconds')"), 'cancelled', 'the run is cancelled');
ok($node->poll_query_until('postgres',
		"SELECT (SELECT completed FROM bf_progress($run)) =
		        (SELECT count(*) FROM batchflow.items WHERE run_id = $run AND status = 'succeeded')"),
	'bf_progress equals the items succeeded');

$node->stop;
done_testing();
