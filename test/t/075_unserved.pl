# A database that no worker serves says so, and bf_wait does not hang.
#
# With batchflow.database_name = 'postgres', a CREATE EXTENSION in another
# database and a bf_start there raise a WARNING (55000) with a hint, and
# bf_wait of an unfinished run there fails at once (55000) instead of
# waiting out its timeout; bf_wait of a finished run still returns its
# status.  A template database is never served, whatever the setting.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('unserved');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.database_name = 'postgres'
batchflow.max_workers = 2
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE other');

# The server messages psql printed, without its "psql:<stdin>:N: " prefix
# and the LOCATION lines.
sub messages
{
	my ($stderr) = @_;
	my @lines = grep { !/^LOCATION:/ } split /\n/, $stderr;
	s/^psql:<stdin>:\d+: // for @lines;
	return join('', map { "$_\n" } @lines);
}

my ($rc, $out, $err) = $node->psql('other',
	"\\set VERBOSITY verbose\nCREATE EXTENSION batchflow");
is($rc, 0, 'CREATE EXTENSION succeeds in a database no worker serves');
is(messages($err), <<'EOT', '... with a WARNING (55000) that says so, and a hint');
WARNING:  55000: no batchflow worker serves database "other"
DETAIL:  batchflow.database_name is "postgres": the workers execute the runs of that database only; runs started here will not be executed.
HINT:  Run CREATE EXTENSION batchflow and bf_start in database "postgres", or set batchflow.database_name = '' in postgresql.conf and restart the server to serve every database.
EOT

$node->safe_psql('other',
	q{SELECT bf_register('one', '{"nodes": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}')});
($rc, $out, $err) = $node->psql('other',
	"\\set VERBOSITY verbose\nSELECT bf_start('one')");
is($rc, 0, 'bf_start succeeds there (the run is recorded) ...');
like($out, qr/^\d+$/, '... and returns the run id');
my $run = $out;
is(messages($err), <<'EOT', '... with the same WARNING');
WARNING:  55000: no batchflow worker serves database "other"
DETAIL:  batchflow.database_name is "postgres": the workers execute the runs of that database only; this run here will not be executed.
HINT:  Run CREATE EXTENSION batchflow and bf_start in database "postgres", or set batchflow.database_name = '' in postgresql.conf and restart the server to serve every database.
EOT

my $t0 = time();
($rc, $out, $err) = $node->psql('other',
	"\\set VERBOSITY verbose\nSELECT bf_wait($run, '10 minutes')");
my $took = time() - $t0;
isnt($rc, 0, 'bf_wait of a run there fails');
cmp_ok($took, '<', 5, sprintf('... at once (%.2f s, with a timeout of 10 minutes)', $took));
is(messages($err), <<"EOT", '... with an error (55000) that says why');
ERROR:  55000: run $run cannot finish: no batchflow worker serves database "other"
DETAIL:  batchflow.database_name is "postgres": the workers execute the runs of that database only.
HINT:  Run CREATE EXTENSION batchflow and bf_start in database "postgres", or set batchflow.database_name = '' in postgresql.conf and restart the server to serve every database.
EOT
sleep(2);
is($node->safe_psql('other', "SELECT status FROM batchflow.runs WHERE id = $run"),
	'running', 'the run stays running, untouched (2 s later)');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker' AND datname = 'other'}),
	'0', 'no worker went to that database (its commit did not ask for one)');

# A finished run: bf_wait returns its status, served or not.
$node->safe_psql('other', "SELECT bf_cancel($run)");
is($node->safe_psql('other', "SELECT bf_wait($run, '10 minutes')"),
	'cancelled', 'bf_wait of a finished run there returns its status');

# The served database: no warning.
($rc, $out, $err) = $node->psql('postgres',
	"CREATE EXTENSION batchflow;\nSELECT bf_register('one', '{\"nodes\": [{\"id\": \"one\", \"type\": \"activity\", \"activity\": \"sql\", \"sql\": \"SELECT 1\"}]}');\nSELECT bf_start('one')");
is($err, '', 'no warning in the served database');
is($node->safe_psql('postgres', "SELECT bf_wait(1, '1 minute')"), 'succeeded',
	'its run succeeds');

# Template databases are never served, even when every database is.
$node->append_conf('postgresql.conf', "batchflow.database_name = ''\n");
$node->restart;
($rc, $out, $err) = $node->psql('template1',
	"\\set VERBOSITY verbose\nCREATE EXTENSION batchflow");
is($rc, 0, 'CREATE EXTENSION in template1 succeeds');
like(messages($err), qr/^WARNING:  55000: no batchflow worker serves database "template1"\nDETAIL:  "template1" is a template database, which workers never connect to; runs started here will not be executed\.\nHINT:  Run CREATE EXTENSION batchflow and bf_start in an ordinary database; databases created from this template are served\.\n$/,
	'... with a WARNING: template databases are not served');
$node->safe_psql('postgres', 'CREATE DATABASE from_template');
$node->safe_psql('from_template',
	q{SELECT bf_register('one', '{"nodes": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}')});
$run = $node->safe_psql('from_template', q{SELECT bf_start('one')});
is($node->safe_psql('from_template', "SELECT bf_wait($run, '1 minute')"),
	'succeeded', 'a database created from that template is served (found by the launcher\'s scan)');
$run = $node->safe_psql('other', q{SELECT bf_start('one')});
is($node->safe_psql('other', "SELECT bf_wait($run, '1 minute')"), 'succeeded',
	'every database served now, a new run in "other" succeeds');

$node->stop;
done_testing();
