# docs/http.md cannot drift from the code.
#
# Every ```sql block of docs/http.md runs, in order, in one psql session
# (ON_ERROR_STOP, so \gset variables carry over), on a fresh cluster, with
# the psql variable api set to the base URL of test/http_server.py on
# 127.0.0.1.  A block right after a line "<!-- norun: reason -->" is
# skipped.  When a ```text block follows a sql block (only blank lines in
# between), it is what the sql block prints in psql's default aligned
# format: compared line by line, trailing spaces ignored, the server's
# port written as 18080 (it has five digits too, so widths agree).
#
# BF_DOCS_ACTUAL=FILE writes what every block printed to FILE, to refresh
# the page after a deliberate change (then read it line by line).

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $page = "$FindBin::RealBin/../../docs/http.md";
open(my $fh, '<', $page) or die "cannot open $page: $!";
my @lines = <$fh>;
close($fh);
chomp @lines;

# The test server, on a free port of 127.0.0.1.
my $port = start_http_server();
like($port, qr/^\d{5}$/, "the test HTTP server listens on 127.0.0.1:$port (five digits, like 18080)");

my $node = crash_node('http_docs');

# The blocks, and the expected output that follows some of them.
my (@blocks, $skipped);
for (my $i = 0; $i < @lines; $i++)
{
	next unless $lines[$i] =~ /^```sql\s*$/;
	my $start = $i + 1;
	my $marker = $i > 0 ? $lines[ $i - 1 ] : '';
	my @body;
	for ($i++; $i < @lines && $lines[$i] !~ /^```\s*$/; $i++) { push @body, $lines[$i]; }
	die "unterminated ```sql block at line $start" if $i >= @lines;
	if ($marker =~ /^<!-- norun\b/)
	{
		$skipped++;
		next;
	}
	my $expected;
	my $j = $i + 1;
	$j++ while $j < @lines && $lines[$j] =~ /^\s*$/;
	if ($j < @lines && $lines[$j] =~ /^```text\s*$/)
	{
		my @out;
		for ($j++; $j < @lines && $lines[$j] !~ /^```\s*$/; $j++) { push @out, $lines[$j]; }
		$expected = join("\n", @out);
	}
	push @blocks, { line => $start, sql => join("\n", @body), expected => $expected };
}
cmp_ok(scalar(@blocks), '>=', 10, scalar(@blocks) . ' SQL blocks to run, ' . ($skipped // 0) . ' marked norun');

my $script = "\\set ON_ERROR_STOP 1\n";
for my $n (0 .. $#blocks)
{
	$script .= "\\echo '### block $n'\n$blocks[$n]{sql}\n";
}
$script .= "\\echo '### end'\n";

my ($out, $err) = ('', '');
my @psql = ($node->installed_command('psql'), '-X', '-q', '-h', $node->host, '-p', $node->port,
	'-d', 'postgres', '-v', "api=http://127.0.0.1:$port", '-f', '-');
my $ok = IPC::Run::run(\@psql, '<', \$script, '>', \$out, '2>', \$err, IPC::Run::timeout(300));
ok($ok, 'every SQL block of docs/http.md runs without error') or diag($err);
is($err, '', 'no error or warning on stderr');
like($out, qr/^### end$/m, 'the last block was reached');

$out =~ s/127\.0\.0\.1:$port/127.0.0.1:18080/g;
my %printed = $out =~ /^### block (\d+)\n(.*?)(?=^### )/msg;
if ($ENV{BF_DOCS_ACTUAL})
{
	open(my $afh, '>', $ENV{BF_DOCS_ACTUAL}) or die "cannot write $ENV{BF_DOCS_ACTUAL}: $!";
	print $afh "### block $_ (line $blocks[$_]{line})\n" . ($printed{$_} // '') for 0 .. $#blocks;
	close($afh);
}

sub tidy
{
	my ($text) = @_;
	$text = join("\n", map { s/\s+$//r } split /\n/, $text // '');
	$text =~ s/^\n+|\n+$//g;
	return $text;
}

my $compared = 0;
for my $n (0 .. $#blocks)
{
	next unless defined $blocks[$n]{expected};
	$compared++;
	is(tidy($printed{$n}), tidy($blocks[$n]{expected}),
		"the output shown after the block at line $blocks[$n]{line} is what it prints");
}
cmp_ok($compared, '>=', 8, "$compared blocks have their output shown and compared");

# What the page's runs left behind: only the ones it makes fail did not succeed.
is($node->safe_psql('postgres',
		q{SELECT string_agg(workflow || ':' || status, ' ' ORDER BY id) FROM batchflow.runs WHERE status <> 'succeeded'}),
	'outside:failed', 'every run of the page succeeded, except the one refused by the allow-list');
is($node->safe_psql('postgres', 'SHOW batchflow.http_allowed_hosts'), '',
	'the page leaves batchflow.http_allowed_hosts empty');

$node->stop;
done_testing();
