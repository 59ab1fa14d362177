# ALTER EXTENSION batchflow UPDATE gives exactly the schema of a fresh
# install, and a run executing during the update carries on.
#
# Database "upg" gets the released 0.1.0 (CREATE EXTENSION ... VERSION
# '0.1.0'), registers workflows and starts runs: one finishes, one fails
# and one is still executing, with an item's SQL in flight, when
# ALTER EXTENSION batchflow UPDATE runs.  Database "fresh" gets the default
# version with a plain CREATE EXTENSION.  The two schemas are then compared
# object by object from the catalogs (relations, columns in order, types,
# defaults, constraints, indexes, sequences, functions with their whole
# definition and privileges, views with their definition and options,
# policies, triggers, event triggers, comments, extension membership and
# the pg_extension_config_dump configuration), and once more through
# pg_dump --schema-only --binary-upgrade (the mode that dumps the members of
# an extension), with object identifiers taken out and the statements
# sorted.  Any line in one and not in the other fails the test and is
# printed.
#
# Every schema change of a release goes both into sql/parts/ (the fresh
# install) and, at the end, into sql/batchflow--0.1.0--0.2.0.sql (the
# update); this test is what proves the two agree.  Columns are compared in
# their order (SELECT * and row types show it), so a column added by the
# update with ALTER TABLE ... ADD COLUMN goes at the end of its table's
# CREATE TABLE in sql/parts/ too.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'batchflow'
batchflow.max_workers = 4
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE upg');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');

my $released = '0.1.0';
my $current  = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'batchflow'});
isnt($current, $released, "the default version ($current) is not the released $released");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM pg_extension_update_paths('batchflow')
 WHERE source = '$released' AND target = '$current' AND path IS NOT NULL}),
	'1',
	"an update path leads from $released to $current");

$node->safe_psql('upg', "CREATE EXTENSION batchflow VERSION '$released'");
is($node->safe_psql('upg', q{SELECT extversion FROM pg_extension WHERE extname = 'batchflow'}),
	$released, "database upg has batchflow $released");

# The server restarts with the library of $current (as after installing it).
my $log_offset = -s $node->logfile;
$node->restart;

# The library (of $current) refuses the SQL objects of $released, clearly.
my ($rc, $out, $err) = $node->psql('upg',
	q{SELECT bf_register('quick', '{"nodes": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1"}]}')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  55000: batchflow library version \Q$current\E cannot use the SQL objects of version \Q$released\E installed in this database/,
	"bf_register refuses the SQL objects of $released (55000)");
like($err, qr/HINT:  Run ALTER EXTENSION batchflow UPDATE in this database\./,
	'... with a hint to run ALTER EXTENSION batchflow UPDATE');
($rc, $out, $err) = $node->psql('upg', q{SELECT bf_start('quick')});
like($err, qr/cannot use the SQL objects of version \Q$released\E/, 'so does bf_start');

# The workers leave the database alone: one warning, no crash loop.
ok($node->wait_for_log(qr/batchflow workers do not serve database "upg": its SQL objects are of version \Q$released\E/, $log_offset),
	'the workers say once why they do not serve the database');
sleep(3);
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'batchflow worker' AND datname = 'upg'}),
	'0', 'no worker stays in the database');
my @warnings = (slurp_file($node->logfile, $log_offset) =~ /workers do not serve database "upg"/g);
is(scalar(@warnings), 1, 'and none comes back to fail again (one warning in 3 s)');

# What a server running $released leaves behind when it is stopped mid-run
# to install $current: what its bf_register and bf_start wrote (the rows,
# and batchflow._advance of $released creating the loops and items), a run
# that succeeded, one that failed, and one executing, 40 of its 400 items
# done with their effects, one claimed by an HTTP-style worker that is gone
# ('running', with the pid of a process that does not exist), the rest
# pending.  (This library cannot play $released's C code, so those rows
# are written here as that code wrote them.)
my $n = 400;
$node->safe_psql(
	'upg', qq{
CREATE SCHEMA app;
CREATE TABLE app.sink (item int NOT NULL UNIQUE, xid xid8 NOT NULL DEFAULT pg_current_xact_id());
INSERT INTO batchflow.workflow (name, owner) VALUES ('quick', 10), ('broken', 10), ('fill', 10);
INSERT INTO batchflow.workflow_version (workflow, version, definition, owner) VALUES
 ('quick', 1, '{"nodes": [{"id": "one", "type": "activity", "activity": "sql", "sql": "SELECT 1 AS one"}]}', 10),
 ('broken', 1, '{"nodes": [{"id": "zero", "type": "activity", "activity": "sql", "sql": "SELECT 1 / 0"}]}', 10),
 ('fill', 1, '{"nodes": [{"id": "fill", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "inputSource": {"variable": "items"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO app.sink (item) SELECT (\$1)::int FROM pg_sleep(0.02) RETURNING xid"}]}]}', 10);
INSERT INTO batchflow.run (version_id, owner, input, vars)
SELECT v.id, 10, i, i FROM batchflow.workflow_version v,
       LATERAL (SELECT CASE v.workflow WHEN 'fill'
                       THEN jsonb_build_object('items', (SELECT jsonb_agg(g) FROM generate_series(1, $n) g))
                       ELSE '{}' END) AS x(i)
 ORDER BY v.id;
SELECT batchflow._advance(id, 0) FROM batchflow.run ORDER BY id;
});
my ($quick, $broken, $fill) = split /\n/,
  $node->safe_psql('upg', 'SELECT id FROM batchflow.run ORDER BY id');
$node->safe_psql(
	'upg', qq{
BEGIN;
INSERT INTO app.sink (item) SELECT g FROM generate_series(1, 40) g;
UPDATE batchflow.item SET status = 'succeeded', attempts = 1, started_at = now(), finished_at = now(),
       output = to_jsonb(pg_current_xact_id()::text)
 WHERE run_id = $fill AND idx < 40;
COMMIT;
UPDATE batchflow.item SET status = 'running', attempts = 1, started_at = now(), worker_pid = 999999
 WHERE run_id = $fill AND idx = 40;
UPDATE batchflow.item SET status = 'succeeded', attempts = 1, started_at = now(), finished_at = now(),
       output = '{"one": 1}'
 WHERE run_id = $quick;
UPDATE batchflow.loop SET status = 'succeeded', finished_at = now() WHERE run_id = $quick;
UPDATE batchflow.run SET status = 'succeeded', finished_at = now(), current_node = 1,
       outputs = '{"one": {"one": 1}}' WHERE id = $quick;
});
my $old_xids = $node->safe_psql('upg', 'SELECT string_agg(xid::text, \',\' ORDER BY item) FROM app.sink');

sleep(2);
is($node->safe_psql('upg', 'SELECT count(*) FROM app.sink'), '40',
	"nothing executes while the database is at $released");

$node->safe_psql('upg', 'ALTER EXTENSION batchflow UPDATE');
is($node->safe_psql('upg', q{SELECT extversion FROM pg_extension WHERE extname = 'batchflow'}),
	$current, "database upg is updated to $current");

$node->safe_psql('fresh', 'CREATE EXTENSION batchflow');
is($node->safe_psql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'batchflow'}),
	$current, "database fresh has $current installed directly");

# The schema, one fact per row (a row may span lines: definitions), from the
# catalogs.
my @catalog_queries = (
	# Extension: version, options, configuration tables and their filters.
	q{
SELECT 'extension', extname, extversion, extrelocatable, extnamespace::regnamespace,
       pg_get_userbyid(extowner)
  FROM pg_extension WHERE extname = 'batchflow'},
	q{
SELECT 'config_dump', c.oid::regclass, cond
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(rel, cond)
  JOIN pg_class c ON c.oid = u.rel
 WHERE e.extname = 'batchflow'},
	# Every object the extension owns.
	q{
SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND e.extname = 'batchflow'},
	# Schemas the extension creates or uses.
	q{
SELECT 'schema', nspname, pg_get_userbyid(nspowner), nspacl
  FROM pg_namespace WHERE nspname IN ('batchflow', 'public')},
	# Relations: kind, persistence, options, row-level security, privileges.
	q{
SELECT 'relation', c.oid::regclass, c.relkind, c.relpersistence, c.reloptions,
       c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
       pg_get_userbyid(c.relowner), c.relacl, c.relispartition
  FROM pg_class c WHERE c.relnamespace::regnamespace::text IN ('batchflow', 'public')
   AND c.relkind <> 'i'},
	# Columns in their order (dropped ones left out), with type, default,
	# nullability, identity, generation, collation, storage, options and
	# privileges (the pg_attver option is set by this server build on its
	# own, differently in every database).
	q{
SELECT 'column', c.oid::regclass,
       row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
       a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
       a.attcollation::regcollation, a.attstorage, a.attcompression,
       a.attstattarget,
       (SELECT array_agg(o ORDER BY o) FROM unnest(a.attoptions) o
         WHERE o NOT LIKE 'pg\_attver=%'),
       a.attacl
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE c.relnamespace::regnamespace::text IN ('batchflow', 'public')
   AND a.attnum > 0 AND NOT a.attisdropped},
	# Constraints of tables and domains.
	q{
SELECT 'constraint', coalesce(con.conrelid::regclass::text, con.contypid::regtype::text),
       con.conname, con.contype, pg_get_constraintdef(con.oid, true),
       con.condeferrable, con.condeferred, con.convalidated, con.connoinherit
  FROM pg_constraint con WHERE con.connamespace::regnamespace::text IN ('batchflow', 'public')},
	# Indexes, with their whole definition.
	q{
SELECT 'index', pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary,
       i.indisclustered, i.indisreplident, i.indisvalid, c.reloptions
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE c.relnamespace::regnamespace::text IN ('batchflow', 'public')},
	# Sequences: parameters and the column that owns each.
	q{
SELECT 'sequence', s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement,
       s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
       (SELECT format('%s.%s:%s', d.refobjid::regclass, a.attname, d.deptype)
          FROM pg_depend d
          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
 WHERE c.relnamespace::regnamespace::text IN ('batchflow', 'public')},
	# Views and materialized views: the definition.
	q{
SELECT 'view', c.oid::regclass, pg_get_viewdef(c.oid, true)
  FROM pg_class c WHERE c.relnamespace::regnamespace::text IN ('batchflow', 'public')
   AND c.relkind IN ('v', 'm')},
	# Functions and procedures: the whole definition (language, body,
	# volatility, strictness, security definer, SET search_path, cost, rows,
	# parallel safety, argument names and defaults), plus privileges and owner.
	q{
SELECT 'function', p.oid::regprocedure, p.prokind, pg_get_userbyid(p.proowner), p.proacl,
       CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END,
       p.prosrc, p.probin, p.proconfig, p.prosecdef, p.proleakproof
  FROM pg_proc p WHERE p.pronamespace::regnamespace::text IN ('batchflow', 'public')},
	# Aggregates.
	q{
SELECT 'aggregate', a.aggfnoid::regprocedure, a.aggkind, a.aggtransfn, a.aggfinalfn,
       a.aggcombinefn, a.aggtranstype::regtype, a.agginitval
  FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
 WHERE p.pronamespace::regnamespace::text IN ('batchflow', 'public')},
	# Types: kind, enum labels in order, domain base types, privileges.
	q{
SELECT 'type', t.oid::regtype, t.typtype, t.typbasetype::regtype, t.typnotnull,
       t.typdefault, pg_get_userbyid(t.typowner), t.typacl,
       (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
          FROM pg_enum e WHERE e.enumtypid = t.oid)
  FROM pg_type t WHERE t.typnamespace::regnamespace::text IN ('batchflow', 'public')},
	# Row-level security policies.
	q{
SELECT 'policy', schemaname, tablename, policyname, permissive, roles, cmd, qual, with_check
  FROM pg_policies WHERE schemaname IN ('batchflow', 'public')},
	# Triggers (not the internal ones of foreign keys).
	q{
SELECT 'trigger', pg_get_triggerdef(t.oid, true), t.tgenabled
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE NOT t.tgisinternal AND c.relnamespace::regnamespace::text IN ('batchflow', 'public')},
	# Event triggers.
	q{
SELECT 'event_trigger', evtname, evtevent, evtfoid::regproc, evtenabled, evttags
  FROM pg_event_trigger},
	# Rules that are not the _RETURN rule of a view.
	q{
SELECT 'rule', schemaname, tablename, rulename, definition
  FROM pg_rules WHERE schemaname IN ('batchflow', 'public')},
	# Comments on everything (built-in objects are the same in both).
	q{
SELECT 'comment', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
  FROM pg_description d WHERE d.classoid <> 'pg_database'::regclass},
	# Default privileges, casts and operators the extension brings.
	q{
SELECT 'default_acl', pg_get_userbyid(defaclrole), defaclnamespace::regnamespace,
       defaclobjtype, defaclacl
  FROM pg_default_acl},
	q{
SELECT 'cast', castsource::regtype, casttarget::regtype, castfunc::regprocedure,
       castcontext, castmethod
  FROM pg_cast WHERE oid >= 16384},
	q{
SELECT 'operator', o.oid::regoperator, o.oprcode::regproc
  FROM pg_operator o WHERE o.oprnamespace::regnamespace::text IN ('batchflow', 'public')});

# Every fact of the schema of a database, sorted.
sub catalog_lines
{
	my ($db) = @_;
	my @lines;
	foreach my $q (@catalog_queries)
	{
		my $out = $node->safe_psql($db, $q,
			extra_params =>
			  [ '--no-align', '--field-separator= | ', '--record-separator-zero' ]);
		push @lines, grep { $_ ne '' } split /\0/, $out;
	}
	return sort @lines;
}

# Lines in one list and not the other, marked - (upgraded) and + (fresh).
sub differences
{
	my ($a, $b) = @_;
	my (%in_a, %in_b);
	$in_a{$_}++ foreach @$a;
	$in_b{$_}++ foreach @$b;
	my @diff;
	foreach my $l (sort keys %in_a)
	{
		my $extra = $in_a{$l} - ($in_b{$l} // 0);
		push @diff, ("- $l") x $extra if $extra > 0;
	}
	foreach my $l (sort keys %in_b)
	{
		my $extra = $in_b{$l} - ($in_a{$l} // 0);
		push @diff, ("+ $l") x $extra if $extra > 0;
	}
	return @diff;
}

my @upgraded = catalog_lines('upg');
my @fresh    = catalog_lines('fresh');
cmp_ok(scalar(@fresh), '>', 500, scalar(@fresh) . ' catalog facts about the fresh install');
ok((grep { /^member \| table batchflow\.run$/ } @fresh), 'the facts include the extension members');
ok((grep { /^function \| bf_start\(text,jsonb\)/ } @fresh), 'the facts include the API functions');
my @diff = differences(\@upgraded, \@fresh);
is(scalar(@diff), 0,
	'catalogs: the updated database has exactly the schema of a fresh install')
  or diag(join("\n", "- only after ALTER EXTENSION UPDATE, + only in a fresh install:", @diff));

# The same through pg_dump.  --binary-upgrade dumps the members of an
# extension (a normal dump has only CREATE EXTENSION); object identifiers,
# the database's own name and the set-up calls are taken out, and the
# statements are compared as a sorted list (pg_dump breaks ties between
# objects of equal rank by OID, which differs between the two).
sub dump_statements
{
	my ($db) = @_;
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(
		[
			'pg_dump', '--schema-only', '--binary-upgrade', '--no-owner',
			'--exclude-schema=app',
			'--dbname', $node->connstr($db)
		],
		'>', \$stdout, '2>', \$stderr);
	ok($ok, "pg_dump --schema-only --binary-upgrade of $db") or diag($stderr);
	my @statements;
	my $cur = '';
	foreach my $line (split /\n/, $stdout)
	{
		next if $line =~ /^--/ || $line =~ /^\s*$/ && $cur eq '';
		$cur .= "$line\n";
		if ($line =~ /;\s*$/)
		{
			push @statements, $cur;
			$cur = '';
		}
	}
	push @statements, $cur if $cur ne '';
	@statements = grep {
		!/binary_upgrade_set_next_|^UPDATE pg_catalog\.pg_class|pg_catalog\.setval\(|^\\(connect|restrict|unrestrict) |pg_catalog\.set_config\('search_path'/
	} @statements;
	s/\b$db\b/DB/g foreach @statements;
	s/(binary_upgrade_create_empty_extension\(.*?)'\{[0-9,]*\}'/$1'{OIDS}'/s foreach @statements;
	return sort @statements;
}

my @dump_upgraded = dump_statements('upg');
my @dump_fresh    = dump_statements('fresh');
ok((grep { /CREATE TABLE batchflow\.run / } @dump_fresh),
	'the schema dump has the extension members');
@diff = differences(\@dump_upgraded, \@dump_fresh);
is(scalar(@diff), 0, 'pg_dump: the updated database dumps exactly like a fresh install')
  or diag(join("\n", "- only after ALTER EXTENSION UPDATE, + only in a fresh install:", @diff));

# The runs left by $released carry on, every item exactly once.
is($node->safe_psql('upg', "SELECT bf_wait($fill, '3 minutes')"),
	'succeeded', 'the run that was executing finishes after the update');
is($node->safe_psql('upg', 'SELECT count(*), count(DISTINCT item), min(item), max(item) FROM app.sink'),
	"$n|$n|1|$n", "every one of its $n items took effect exactly once");
is($node->safe_psql('upg', 'SELECT string_agg(xid::text, \',\' ORDER BY item) FROM app.sink WHERE item <= 40'),
	$old_xids, 'the 40 items done before the update were not done again');
is( $node->safe_psql(
		'upg', qq{
SELECT count(*) FILTER (WHERE i.status = 'succeeded'), count(*) FILTER (WHERE i.attempts = 1),
       count(*) FILTER (WHERE i.idx >= 40 AND s.xid::text = i.output #>> '{}')
  FROM batchflow.items i JOIN app.sink s ON s.item = (i.item)::int WHERE i.run_id = $fill}),
	"$n|" . ($n - 1) . '|' . ($n - 40),
	'every item succeeded once; the ones done after the update, each in the transaction that wrote its effect');
is($node->safe_psql('upg', "SELECT status, attempts FROM batchflow.item WHERE run_id = $fill AND idx = 40"),
	'succeeded|2', 'the item left running by a worker that is gone was re-queued and run again (its second attempt)');
is($node->safe_psql('upg', "SELECT bf_wait($broken, '1 minute')"),
	'failed', "the run of $released that had not started yet runs (and fails as it should)");
like($node->safe_psql('upg', "SELECT error FROM batchflow.runs WHERE id = $broken"),
	qr/division by zero/, '... with its error');
is($node->safe_psql('upg', "SELECT status FROM batchflow.runs WHERE id = $quick"),
	'succeeded', 'the run finished before the update reads as before');

# New workflows and runs work.
$node->safe_psql('upg',
	q{SELECT bf_register('quick', '{"nodes": [{"id": "two", "type": "activity", "activity": "sql", "sql": "SELECT 2"}]}')});
my $after = $node->safe_psql('upg', q{SELECT bf_start('quick')});
is($node->safe_psql('upg', "SELECT bf_wait($after, '1 minute')"),
	'succeeded', 'a new run after the update succeeds');

$node->stop;
done_testing();
