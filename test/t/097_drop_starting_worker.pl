# DROP DATABASE while a worker for that database is still starting.
#
# The launcher lends a worker slot to a database and asks the postmaster
# for a worker; until that worker attaches, the slot has no pid.  A DROP
# DATABASE in that gap asks the database's workers to leave: the ones
# running are signalled and waited for, the starting one must leave too,
# as soon as it attaches, without connecting.  Before, it took up its
# slot as if nothing had been asked, connected while DROP DATABASE waited
# for the others, and DROP DATABASE then failed after five seconds with
# "database is being accessed by other users".
#
# The gap is made wide on purpose: the workers serving the database are
# all busy in items that wait for an advisory lock the test holds, and
# the postmaster is stopped (SIGSTOP) while a new run makes the launcher
# ask for more workers, so they cannot start until the test lets the
# postmaster go on, after DROP DATABASE has begun and while it still
# waits for the busy workers.  Workers idle out only after 8 s, longer
# than DROP DATABASE's own five-second wait.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('drop_starting');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.max_workers = 4
batchflow.worker_idle_timeout = '8s'
max_worker_processes = 12
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE db_busy');
$node->safe_psql(
	'db_busy', q{
CREATE EXTENSION batchflow;
SELECT bf_register('held', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 2,
   "inputSource": {"variable": "items"},
   "children": [{"id": "wait", "type": "activity", "activity": "sql",
                 "sql": "SELECT pg_advisory_lock_shared(42), pg_advisory_unlock_shared(42)"}]}]}');
});

# Two workers of db_busy wait in items for lock 42; the others idle out.
my $holder = $node->background_psql('db_busy');
$holder->query_safe('SELECT pg_advisory_lock(42)');
$node->safe_psql('db_busy', q{SELECT bf_start('held', '{"items": [1, 2]}')});
my $workers = q{SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'batchflow worker' AND datname = 'db_busy'};
ok( $node->poll_query_until(
		'db_busy', "SELECT count(*) = 2 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"),
	'two items wait for the lock');
ok($node->poll_query_until('postgres', "SELECT ($workers) = 2"),
	'db_busy keeps exactly its two busy workers (the idle ones left)');

# Sessions opened before the postmaster stops (it cannot fork new ones).
my $starter = $node->background_psql('db_busy');
my $dropper = $node->background_psql('postgres');
my ($pm_pid) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
like($pm_pid, qr/^\d+$/, "postmaster pid $pm_pid");

kill('STOP', $pm_pid);
my $stopped = 1;
END { kill('CONT', $pm_pid) if $stopped; }

# A new run: no worker of db_busy is idle, so the launcher lends free
# slots to it; their workers cannot start yet (no pid in the slots).
$starter->query_safe(q{SELECT bf_start('held', '{"items": [3]}')});
sleep(1);
is($dropper->query_safe($workers), '2',
	'while the postmaster is stopped, db_busy still has two workers');

# DROP DATABASE begins: it asks db_busy's workers to leave and waits for
# the two busy ones.  The postmaster goes on and starts the new workers;
# a second later the lock is released and every session leaves.
my $t0 = time();
$dropper->{stdin} .= "DROP DATABASE db_busy;\n";
$dropper->{run}->pump_nb;
sleep(0.5);
kill('CONT', $pm_pid);
$stopped = 0;
sleep(1.5);
$holder->query_safe('SELECT pg_advisory_unlock(42)');
$holder->quit;
$starter->quit;
# psql stops at an error (ON_ERROR_STOP): then the session is gone.
my ($out, $failed) = eval {
	$dropper->query(q{SELECT 'dropped: ' || (count(*) = 0)::text FROM pg_database WHERE datname = 'db_busy'});
};
my $took = time() - $t0;
$failed = 1 if !defined($out);
is($failed, 0, sprintf('DROP DATABASE succeeds (%.2f s)', $took))
  or diag($dropper->{stderr});
is($out, 'dropped: true', 'db_busy is gone');
eval { $dropper->quit; };

# The workers that were starting never connected to db_busy, and the pool
# serves again: a new database gets its runs executed.
ok(!$node->log_contains(qr/database "db_busy" does not exist|being accessed by other users/),
	'no worker tried to connect to the dropped database');
$node->safe_psql('postgres', 'CREATE DATABASE db_next');
$node->safe_psql('db_next', q{
CREATE EXTENSION batchflow;
SELECT bf_register('quick', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "sequential", "inputSource": {"variable": "items"},
   "children": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}]}');
});
my $next = $node->safe_psql('db_next', q{SELECT bf_start('quick', '{"items": [1, 2, 3]}')});
is($node->safe_psql('db_next', "SELECT bf_wait($next, '60 seconds')"),
	'succeeded', 'a run in another database is served afterwards');

$node->stop;
done_testing();
