# The user guide cannot drift from the code.
#
# docs/user-guide.md is checked against a fresh cluster that preloads
# batchflow and pg_cron:
#
#   1. its settings table lists every batchflow.* setting with the default,
#      unit, range and context the server reports, and nothing else;
#   2. every ```sql block runs, in order, in one psql session with
#      ON_ERROR_STOP=1 (so \gset variables carry over); a block right after
#      a line "<!-- norun: reason -->" is skipped; a block right after a
#      line "<!-- error -->" must fail (its last statement raises an error,
#      as psql's :ERROR tells);
#   3. its SQL API reference has a heading for every function and view of
#      the extension whose name does not start with "_", with the
#      signature and result type, or the columns, that the catalog has.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $guide = "$ENV{TESTDIR}/docs/user-guide.md";
open(my $fh, '<', $guide) or die "cannot open $guide: $!";
my @lines = <$fh>;
close($fh);
chomp @lines;

my $node = PostgreSQL::Test::Cluster->new('docs');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'batchflow,pg_cron'
max_worker_processes = 32
cron.database_name = 'postgres'
cron.use_background_workers = on
cron.max_running_jobs = 4
});
$node->start;

# 1. The settings table, before any snippet changes a setting.
my %documented;
my $in_tuning = 0;
for my $line (@lines)
{
	$in_tuning = $line =~ /^## 8\. Performance tuning/ if $line =~ /^## /;
	next unless $in_tuning && $line =~ /^\| `(batchflow\.[a-z_]+)` \|/;
	my @cells = map { s/^\s+|\s+$//gr } split /\|/, $line;
	shift @cells;    # the empty cell before the first |
	my ($name, $default, $unit, $range, $context) = @cells[ 0 .. 4 ];
	$name    =~ s/`//g;
	$default =~ s/`//g;
	$documented{$name} = join(' ', $default, $unit, $range, $context);
}
my %actual = map { my @f = split /\|/; ($f[0] => "$f[1] $f[2] $f[3] $f[4]") }
  split /\n/,
  $node->safe_psql(
	'postgres', q{
SELECT name, CASE current_setting(name) WHEN '' THEN '''''' ELSE current_setting(name) END, coalesce(unit, '—'),
       CASE WHEN min_val IS NULL THEN '—' ELSE min_val || '..' || max_val END, context
  FROM pg_settings WHERE name LIKE 'batchflow.%' ORDER BY name});
cmp_ok(scalar(keys %actual), '>=', 10, 'the server reports the batchflow settings');
for my $name (sort keys %actual)
{
	is($documented{$name} // 'missing from the guide',
		$actual{$name}, "setting $name: default, unit, range and context as documented");
}
for my $name (sort keys %documented)
{
	ok(exists $actual{$name}, "documented setting $name exists");
}

# 2. The SQL blocks, in order, in one session.
my $script = "\\set ON_ERROR_STOP 1\n";
my @origin;    # script line number -> guide line number
my ($blocks, $skipped, $errors) = (0, 0, 0);
my $script_lines = 1;
my $add = sub {
	my ($text, $guide_line) = @_;
	for my $l (split /\n/, $text, -1)
	{
		$script .= "$l\n";
		$script_lines++;
		$origin[$script_lines] = $guide_line;
	}
};
for (my $i = 0; $i < @lines; $i++)
{
	next unless $lines[$i] =~ /^```sql\s*$/;
	my $start = $i + 1;
	my $marker = $i > 0 ? $lines[ $i - 1 ] : '';
	my @body;
	for ($i++; $i < @lines && $lines[$i] !~ /^```\s*$/; $i++)
	{
		push @body, $lines[$i];
	}
	die "unterminated ```sql block at line $start" if $i >= @lines;
	$blocks++;
	if ($marker =~ /^<!-- norun\b/)
	{
		$skipped++;
		next;
	}
	$add->("\\echo '### block $blocks (line $start)'", $start);
	if ($marker =~ /^<!-- error -->$/)
	{
		$errors++;
		$add->("\\set ON_ERROR_STOP 0", $start);
		$add->($body[$_], $start + 1 + $_) for 0 .. $#body;
		$add->(
			"\\set ON_ERROR_STOP 1\n\\if :ERROR\n\\echo '### block $blocks failed as expected'\n\\else\n\\echo '### DOCS ERROR: block $blocks (line $start) was expected to fail'\n\\endif",
			$start);
	}
	else
	{
		$add->($body[$_], $start + 1 + $_) for 0 .. $#body;
	}
}
cmp_ok($blocks - $skipped, '>=', 30, "the guide has $blocks SQL blocks, $skipped not run, $errors expected to fail");

my ($out, $err);
my $rc = $node->psql(
	'postgres', $script,
	stdout        => \$out,
	stderr        => \$err,
	on_error_stop => 1,
	timeout       => 300);
if ($rc != 0 && $err =~ /<stdin>:(\d+):/)
{
	diag("first failure at guide line " . ($origin[$1] // '?') . ":\n$err");
}
# Keep what the guide's blocks printed, for reading and for debugging.
my $outfile = "$PostgreSQL::Test::Utils::log_path/040_docs_snippets_output.txt";
open(my $ofh, '>', $outfile) or die "cannot write $outfile: $!";
print $ofh $out, "\n--- stderr\n", $err;
close($ofh);
is($rc, 0, 'every SQL block of the guide runs without error');
my $ran = () = $out =~ /^### block \d+ \(line \d+\)$/mg;
is($ran, $blocks - $skipped, 'every block that is not marked norun was executed');
my $failed_ok = () = $out =~ /^### block \d+ failed as expected$/mg;
is($failed_ok, $errors, 'every block marked error failed');
unlike($out, qr/DOCS ERROR/, 'no block marked error succeeded');

# The guide's runs end as the guide says: only the ones it makes fail or
# cancels on purpose did not succeed.
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(workflow || ':' || status, ' ' ORDER BY workflow, id)
  FROM batchflow.runs WHERE status <> 'succeeded'}),
	'alice_reads_greeting:failed charge_all_or_nothing:failed slow_seq:cancelled',
	'every run of the guide succeeded, except the failures and the cancel it shows');

# 3. The SQL API reference.
my (%doc_func, %doc_view);
for (my $i = 0; $i < @lines; $i++)
{
	if ($lines[$i] =~ /^#### `([a-z_.]+)\((.*)\) → (.+)`$/)
	{
		$doc_func{$1} = "($2) → $3";
	}
	elsif ($lines[$i] =~ /^#### `(batchflow\.[a-z_]+)`$/)
	{
		my $view = $1;
		my $para = '';
		for ($i++; $i < @lines && $lines[$i] !~ /^#/; $i++)
		{
			$para .= " $lines[$i]";
		}
		$i--;
		my ($cols) = $para =~ /Columns:(.*?)\./s;
		$doc_view{$view} = join(', ', ($cols // '') =~ /`([a-z_0-9]+)`/g);
	}
}

my %cat_func;
for my $row (
	split /\n/,
	$node->safe_psql(
		'postgres', q{
SELECT CASE WHEN n.nspname = 'batchflow' THEN 'batchflow.' ELSE '' END || p.proname,
       pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'batchflow'
 WHERE p.proname NOT LIKE '\_%'}))
{
	my ($name, $args, $result) = split /\|/, $row;
	# As \df prints them, without OUT arguments and without default casts.
	$args = join(', ', grep { !/^OUT / } split /, /, $args);
	$args =~ s/::[a-z ]+//g;
	$cat_func{$name} = "($args) → $result";
}
cmp_ok(scalar(keys %cat_func), '>=', 8, 'the extension has user-facing functions');
for my $f (sort keys %cat_func)
{
	is($doc_func{$f} // 'missing from the guide',
		$cat_func{$f}, "reference: $f$cat_func{$f}");
}
for my $f (sort keys %doc_func)
{
	ok(exists $cat_func{$f}, "documented function $f exists");
}

my %cat_view = map { my ($v, $c) = split /\|/; ($v => $c) } split /\n/,
  $node->safe_psql(
	'postgres', q{
SELECT 'batchflow.' || c.relname, string_agg(a.attname, ', ' ORDER BY a.attnum)
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'batchflow'
 WHERE c.relkind = 'v' AND c.relname NOT LIKE '\_%'
 GROUP BY c.relname});
cmp_ok(scalar(keys %cat_view), '>=', 6, 'the extension has user-facing views');
for my $v (sort keys %cat_view)
{
	is($doc_view{$v} // 'missing from the guide', $cat_view{$v}, "reference: columns of $v");
}
for my $v (sort keys %doc_view)
{
	ok(exists $cat_view{$v}, "documented view $v exists");
}

$node->stop;
done_testing();
