# Hostile items through both activity kinds (issue 8): an HTTP child that
# sends the item in the URL, a header and the JSON body to
# test/http_server.py's /echo, then a SQL child that stores the item it was
# given ($1) and the request the server saw ($3 -> prev).  Every item must
# arrive unchanged at the server and in SQL: quotes and a DROP TABLE,
# {{item}} (no second round of templating), backslashes, unicode, a JSON
# object with SQL in it, 10,000 levels of nesting and a 10 MB string.  An
# item with CR LF cannot add a header of its own.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The test server, on a free port of 127.0.0.1.
my $port = start_http_server();
like($port, qr/^\d+$/, "the test HTTP server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";

my $node = crash_node('security_http', q{
batchflow.http_max_response_size = '64MB'
});

sub query { return $node->safe_psql('postgres', $_[0]); }

# A plain role runs the workflow; the sink is its own table, and records
# the role each SQL child ran as (the worker itself is a superuser, which
# could write anything: only the recorded role shows whose rights applied).
query(q{
CREATE ROLE sec_http;
GRANT USAGE ON SCHEMA batchflow TO sec_http;
CREATE TABLE sink (idx int PRIMARY KEY, item jsonb, seen jsonb,
                   who name NOT NULL DEFAULT current_user,
                   super boolean);
CREATE FUNCTION sink_super() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.super := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
    RETURN NEW;
END;
$$;
CREATE TRIGGER sink_super BEFORE INSERT ON sink FOR EACH ROW EXECUTE FUNCTION sink_super();
ALTER TABLE sink OWNER TO sec_http;
});

# Register a workflow whose loop sends each item to /echo with the given
# URL query, headers and body, then stores it.
sub register
{
	my ($name, $query, $headers) = @_;
	query(qq{SET ROLE sec_http;
SELECT bf_register('$name', \$j\${"nodes": [
  {"id": "each", "type": "loop", "loopType": "parallel", "concurrency": 4,
   "errorStrategy": "continue", "inputSource": {"variable": "xs"},
   "children": [
     {"id": "call", "type": "activity", "activity": "http", "method": "POST",
      "url": "$base/echo?$query", "headers": $headers,
      "body": {"whole": "{{item}}", "text": "<{{item}}>"}, "timeoutMs": 60000},
     {"id": "keep", "type": "activity", "activity": "sql",
      "sql": "INSERT INTO sink VALUES (\$2 + (\$3 -> 'vars' ->> 'offset')::int, \$1, \$3 -> 'prev' -> 'body') RETURNING 1"}]}]}\$j\$)});
}
register('hostile', 'i={{index}}&v={{item}}', '{"X-Item": "{{item}}"}');
# The two large items go in the body only: a URL or a header of 10 MB is
# refused by any server, which is not what this test is about.
register('hostile_big', 'i={{index}}', '{}');

my $small = q{jsonb_build_array(
    $x$'); DROP TABLE sink; --$x$,
    '{{item}}',
    '{{index}} {{run}} {{item.x}}',
    E'back\\\\slash \\\\\\\\ \\\\n '' " %20 %s &amp; ?a=b#c',
    'héllo ✓ 😀 עברית ‮RTL‏ zero​width',
    '{"sql": "SELECT 1; DROP TABLE sink", "$1": "{{item}}"}'::jsonb)};
my $big = q{jsonb_build_array(
    (repeat('[', 10000) || '"deep"' || repeat(']', 10000))::jsonb,
    repeat('x', 10 * 1024 * 1024))};
my $items = "$small || $big";

foreach my $r (['hostile', $small, 0], ['hostile_big', $big, 6])
{
	my ($name, $xs, $offset) = @$r;
	my $run = query(qq{SET ROLE sec_http;
		SELECT bf_start('$name', jsonb_build_object('xs', $xs, 'offset', $offset))});
	is(query("SELECT bf_wait($run, '3 minutes')"), 'succeeded', "the run of $name finished");
	is(query("SELECT count(*) FROM batchflow.items WHERE run_id = $run AND status <> 'succeeded'"),
		'0', "every item of $name succeeded")
	  or diag(query("SELECT idx, left(error, 300) FROM batchflow.items WHERE run_id = $run AND status <> 'succeeded'"));
}
is(query('SELECT count(*) FROM sink'), '8', 'the sink table survived and holds every item');
is(query(q{SELECT string_agg(DISTINCT who || ' ' || super, ',') FROM sink}), 'sec_http false',
	'every SQL child ran as the run\'s owner, a plain role, not as the worker\'s superuser');

# A line break in a header value would let an item add headers of its own
# (or end the header block): the attempt fails before anything is sent.
my $crlf = query(qq{SET ROLE sec_http;
	SELECT bf_start('hostile', jsonb_build_object('xs', jsonb_build_array(E'ok\\r\\nX-Injected: yes'), 'offset', 100))});
is(query("SELECT bf_wait($crlf, '1 minute')"), 'succeeded', 'the run with a CR LF item finished');
like(query("SELECT status || ': ' || error FROM batchflow.items WHERE run_id = $crlf"),
	qr/^failed: header "X-Item" would contain a line break or colon after templating/,
	'an item with CR LF cannot inject a header');
is(query('SELECT count(*) FROM sink WHERE idx = 100'), '0', 'and nothing of it was stored');

# In SQL ($1): every item exactly as given.
is(query(qq{SELECT count(*) FROM sink s
             JOIN jsonb_array_elements($items) WITH ORDINALITY AS x(v, o) ON s.idx = x.o - 1
            WHERE s.item = x.v}),
	'8', 'SQL child: $1 is each item, unchanged');

# At the server: the JSON body's "whole" is the item as JSON, and "text"
# has it inside a string, for all eight.
is(query(q{SELECT count(*) FROM sink
            WHERE ((seen ->> 'body')::jsonb -> 'whole') = item
              AND ((seen ->> 'body')::jsonb ->> 'text') = '<' || (item #>> '{}') || '>'}),
	'8', 'HTTP body: {{item}} arrives as the item itself, and inside a string as its text');

# URL and header, for the small ones: the query string decodes to the
# item's text (percent-encoded on the way), the header carries it as is.
is(query(q{SELECT count(*) FROM sink
            WHERE idx < 6
              AND seen -> 'args' ->> 'v' = item #>> '{}'
              AND seen -> 'args' ->> 'i' = idx::text}),
	'6', 'URL: {{item}} and {{index}} arrive decoded to exactly the item and index');
is(query(q{SELECT count(*) FROM sink
            WHERE idx < 6 AND seen ->> 'query' ~ '^i=[0-9]+&v=[A-Za-z0-9%._~-]*$'}),
	'6', 'URL: the query string is percent-encoded (no raw quote, space, &, # or ?)');
# (Python's http.server reads header values as Latin-1, so the unicode
# item is left out here.)
is(query(q{SELECT count(*) FROM sink
            WHERE idx IN (0, 1, 2, 3, 5) AND seen -> 'headers' ->> 'x-item' = item #>> '{}'}),
	'5', 'header: {{item}} arrives as the item text');

# The 10 MB and the deep item made it through the body intact.
is(query(q{SELECT octet_length((seen ->> 'body')::jsonb ->> 'whole') FROM sink WHERE idx = 7}),
	10 * 1024 * 1024, 'the 10 MB item reached the server whole');
is(query(q{SELECT jsonb_path_query_first((seen ->> 'body')::jsonb -> 'whole', 'strict $.**{9999}') FROM sink WHERE idx = 6}),
	'["deep"]', 'the 10,000-deep item reached the server whole');

$node->stop;
done_testing();
