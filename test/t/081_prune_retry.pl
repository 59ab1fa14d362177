# History pruning and bf_retry: bf_retry refuses a run whose items were
# pruned (it used to re-queue nothing and say nothing), and the pruning
# watermark never passes a run that an open transaction may still close.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = crash_node('prune_retry', "batchflow.history_retention = 0\n");
sub query { return $node->safe_psql('postgres', $_[0]); }

# Every third item fails; errorStrategy continue: the run succeeds with
# failed items, which bf_retry would re-queue.
query(q{SELECT bf_register('third', '{"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "items"}, "errorStrategy": "continue",
   "children": [{"id": "div", "type": "activity", "activity": "sql",
                 "sql": "SELECT 1 / (($1)::int % 3)"}]}]}')});
sub finished_run
{
	my $run = query(q{SELECT bf_start('third', '{"items": [1, 2, 3, 4, 5, 6]}')});
	is(query("SELECT bf_wait($run, '1 minute')"), 'succeeded', "run $run finished");
	return $run;
}

# 1. A transaction open since before a run finished holds pruning back: the
# run is not pruned until that transaction ends.
my $open = $node->background_psql('postgres');
$open->query_safe('BEGIN');
$open->query_safe('SELECT txid_current()');
my $late = finished_run();
query("ALTER SYSTEM SET batchflow.history_retention = '1s'; SELECT pg_reload_conf()");
sleep(4);
is(query("SELECT count(*) FROM batchflow.pruned_run WHERE run_id = $late"),
	'0', 'a run that finished after an open transaction began is not pruned while it is open');
$open->query_safe('COMMIT');
$open->quit;
ok( $node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM batchflow.pruned_run WHERE run_id = $late AND pruned_at IS NOT NULL)"),
	'once it has ended, the run is pruned');

# 2. bf_retry of a pruned run refuses, with a hint.
my ($rc, $stdout, $stderr) = $node->psql('postgres', "SELECT bf_retry($late)");
isnt($rc, 0, 'bf_retry of a pruned run fails');
like($stderr, qr/run $late cannot be retried: its items were pruned/, '... saying why');
like($stderr, qr/HINT:  Start a new run with the inputs that failed/, '... with a hint');
is(query("SELECT status FROM batchflow.runs WHERE id = $late"), 'succeeded', 'the run is left as it was');

$node->stop;
done_testing();
