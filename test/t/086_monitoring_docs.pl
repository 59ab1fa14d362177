# docs/monitoring.md's queries run as written.
#
# Every ```sql block of the page runs, in order, in one psql session
# (ON_ERROR_STOP, so the run ids its blocks \gset carry over), on a fresh
# cluster: the page starts its own runs (import_users, greet_customers)
# and queries them.  The history queries must find what the page says is
# there, not just run: a query that reads the wrong run returns nothing.
# A block right after a line "<!-- norun: reason -->" is skipped.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $page = "$FindBin::RealBin/../../docs/monitoring.md";
open(my $fh, '<', $page) or die "cannot open $page: $!";
my @lines = <$fh>;
close($fh);

my $node = crash_node('monitoring_docs');

my $script = "\\set ON_ERROR_STOP 1\n";
my ($blocks, $skipped) = (0, 0);
for (my $i = 0; $i < @lines; $i++)
{
	next unless $lines[$i] =~ /^```sql\s*$/;
	my $start = $i + 1;
	my $marker = $i > 0 ? $lines[ $i - 1 ] : '';
	my $body = '';
	for ($i++; $i < @lines && $lines[$i] !~ /^```\s*$/; $i++) { $body .= $lines[$i]; }
	die "unterminated ```sql block at line $start" if $i >= @lines;
	$blocks++;
	if ($marker =~ /^<!-- norun\b/) { $skipped++; next; }
	$script .= "\\echo '### block $blocks (line $start)'\n$body";
}
cmp_ok($blocks - $skipped, '>=', 10, "the page has $blocks SQL blocks, $skipped not run");

my ($out, $err);
my $rc = $node->psql('postgres', $script, stdout => \$out, stderr => \$err,
	on_error_stop => 1, timeout => 300);
is($rc, 0, 'every SQL block of docs/monitoring.md runs without error') or diag($err);
my $outfile = "$PostgreSQL::Test::Utils::log_path/086_monitoring_docs_output.txt";
open(my $o, '>', $outfile) or die "cannot write $outfile: $!";
print $o $out;
close($o);

# The history queries find the page's own run.
like($out, qr/^greet\s*\|\s*\d+\s*\|\s*customer 2\s*\|\s*1\s*\|\s*division by zero$/m,
	'the failed items of the greet run are listed with their error');
like($out, qr/^\s*\d+\s*\|\s*customer 42\s*$/m, 'the search by name finds customer 42');
like($out, qr/"greeting": "hello customer 7"/, 'the search in outputs finds customer 7');
# (whatever its status: the import_users run may still be under way)
like($out, qr/^\s*\d+\s*\|\s*load\s*\|\s*41\s*\|\s*(?:pending|running|succeeded)\s*$/m,
	'the GIN-indexed search finds user42 of the import_users run');
my @pages = $out =~ /^\s*(\d+)\s*\|\s*(?:succeeded|failed)\s*$/mg;
is(scalar(@pages), 25, 'the first keyset page has 25 items');

$node->stop;
done_testing();
