# What an HTTP batch leaves in its worker: session-level locks that are not
# its own stay held after a failed round, and a batch whose schema was
# dropped and created again (DROP/CREATE EXTENSION while requests are in
# flight) does not write into the new schema's loops.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BatchflowCrash;
use BatchflowHttp;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_http_server();
like($port, qr/^\d+$/, "the test HTTP server listens on 127.0.0.1:$port");
my $base = "http://127.0.0.1:$port";

my $node = crash_node('http_state');
sub query { return $node->safe_psql('postgres', $_[0]); }

# 1. A round that fails must release the batch's cap locks only, not an
# advisory lock the item's own SQL took at session level.
query(q{
CREATE TABLE boom_flag (armed boolean NOT NULL);
INSERT INTO boom_flag VALUES (true);
CREATE TABLE lock_log (id int PRIMARY KEY);
CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'succeeded' AND (SELECT armed FROM public.boom_flag) THEN
        RAISE EXCEPTION 'boom from the test trigger';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER boom BEFORE UPDATE ON batchflow.item
    FOR EACH ROW EXECUTE FUNCTION public.boom();
});
# The SQL child takes the user's lock once (the first attempt only).
query(qq{SELECT bf_register('lockhttp', \$j\${"nodes": [{"id": "each", "type": "loop",
  "loopType": "parallel", "concurrency": 1, "inputSource": {"variable": "items"},
  "children": [
    {"id": "lock", "type": "activity", "activity": "sql",
     "sql": "WITH l AS (INSERT INTO public.lock_log VALUES (1) ON CONFLICT DO NOTHING RETURNING 1) SELECT pg_advisory_lock(4242) FROM l"},
    {"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms=10"}]}]}\$j\$)});
my $log_offset = -s $node->logfile;
my $run = query(q{SELECT bf_start('lockhttp', '{"items": [1]}')});
$node->wait_for_log(qr/boom from the test trigger/, $log_offset);
is(query(q{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.objid = 4242 AND l.granted
              AND a.backend_type = 'batchflow worker'}),
	'1', "after a failed HTTP round the worker still holds the item's own session advisory lock");
query('UPDATE boom_flag SET armed = false');
is(query("SELECT bf_wait($run, '1 minute')"), 'succeeded', 'the item succeeds once the trigger is disarmed');

# 2. DROP/CREATE EXTENSION while HTTP requests are in flight: loop ids
# start again from 1, so the batch's loop id now names a loop of the new
# schema; the old batch must not record anything into it.
query('DROP EXTENSION batchflow CASCADE; CREATE EXTENSION batchflow');
query(qq{SELECT bf_register('slowhttp', \$j\${"nodes": [{"id": "each", "type": "loop",
  "loopType": "parallel", "concurrency": 4, "inputSource": {"variable": "items"},
  "children": [{"id": "call", "type": "activity", "activity": "http", "url": "$base/sleep?ms=4000"}]}]}\$j\$)});
my $old = query(q{SELECT bf_start('slowhttp', '{"items": [0, 1, 2, 3]}')});
is(query("SELECT id FROM batchflow.loop WHERE run_id = $old"), '1', 'the HTTP loop is loop 1');
ok( $node->poll_query_until('postgres', q{SELECT count(*) = 4 FROM batchflow.item WHERE status = 'running'}),
	'its four requests are in flight');
query(q{
DROP EXTENSION batchflow CASCADE;
CREATE EXTENSION batchflow;
CREATE TABLE sink (idx int PRIMARY KEY);
CREATE FUNCTION slow_put(i int) RETURNS int LANGUAGE sql AS
  'INSERT INTO public.sink VALUES (i); SELECT pg_sleep(0.3); SELECT i';
SELECT bf_register('sqlrun', '{"nodes": [{"id": "each", "type": "loop",
  "loopType": "parallel", "concurrency": 1, "inputSource": {"variable": "items"},
  "children": [{"id": "put", "type": "activity", "activity": "sql", "sql": "SELECT public.slow_put($2)"}]}]}');
});
my $new = query(q{SELECT bf_start('sqlrun', '{"items": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]}')});
is(query("SELECT id FROM batchflow.loop WHERE run_id = $new"), '1', 'the new SQL loop is loop 1 too');
is(query("SELECT bf_wait($new, '2 minutes')"), 'succeeded', 'the new run succeeds');
is(query('SELECT count(*) FROM sink'), '16', 'every item of the new loop was executed (none recorded by the old batch)');
is(query(q{SELECT count(*) FROM batchflow.item WHERE output IS DISTINCT FROM to_jsonb(idx)}),
	'0', 'every item of the new loop holds its own output');
is(query(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid >= 16}),
	'0', 'no cap lock of the old batch is left behind');

# 3. A JSON body that jsonb refuses (a \u0000 escape, which JSON allows) is
# kept as text, found so before jsonb_in is called (no error is raised and
# swallowed outside a transaction), and the worker carries on.
query(qq{SELECT bf_register('nul', \$j\${"nodes": [{"id": "each", "type": "loop",
  "loopType": "parallel", "concurrency": 2, "inputSource": {"variable": "items"},
  "children": [{"id": "call", "type": "activity", "activity": "http", "url": "$base/echo?x=%00&n={{item}}"}]}]}\$j\$)});
my $nul = query(q{SELECT bf_start('nul', '{"items": [1, 2, 3]}')});
is(query("SELECT bf_wait($nul, '1 minute')"), 'succeeded', 'a run whose responses hold \\u0000 succeeds');
is(query(qq{SELECT string_agg(jsonb_typeof(output -> 'body') || ':' || (strpos(output ->> 'body', '\\u0000') > 0), ',' ORDER BY idx)
              FROM batchflow.item WHERE run_id = $nul}),
	'string:true,string:true,string:true', 'each such body is kept as its JSON text');

$node->stop;
done_testing();
