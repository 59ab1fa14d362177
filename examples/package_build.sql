-- Multi-package build: build 20 packages of a monorepo in dependency order,
-- four at a time.
--
--   psql -d DB -f examples/package_build.sql
--
-- Each package lists the packages it depends on, and a package can only be
-- built once everything it depends on has been built and published.  The
-- graph has a diamond (core -> util, log -> config), chains (config -> net
-- -> http -> web -> admin; core -> db -> cache -> queue), packages that
-- join several branches (auth, worker, sdk) and independent leaves.  The
-- loop's "dependsOn" property tells batchflow the key of each item
-- ("name") and where its dependencies are listed ("deps"): an item is
-- started only once all its dependencies succeeded, at most four at once,
-- and a freed slot goes at once to the next package whose dependencies are
-- done.  A build is simulated: it takes between 0.1 and 0.5 s (pg_sleep),
-- refuses to start when a dependency is not published yet, and writes an
-- artifact with a checksum.  Two children per package: "compile" returns
-- the artifact name, which "publish" receives as "prev".
--
-- Everything lives in schema example_build, dropped and recreated on every
-- load, so the file can be run again and again.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
DROP SCHEMA IF EXISTS example_build CASCADE;
RESET client_min_messages;
CREATE SCHEMA example_build;

CREATE TABLE example_build.package (
    name        text PRIMARY KEY,
    version     text NOT NULL,
    depends_on  text[] NOT NULL DEFAULT '{}',
    source_hash text NOT NULL
);

CREATE TABLE example_build.artifact (
    package     text PRIMARY KEY REFERENCES example_build.package,
    file        text NOT NULL UNIQUE,
    sha256      text NOT NULL,
    size_bytes  int NOT NULL,
    built_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published   boolean NOT NULL DEFAULT false
);

-- 20 packages and what each depends on.
INSERT INTO example_build.package (name, version, depends_on, source_hash)
SELECT name, format('1.%s.0', length(name)), depends_on, md5('source of ' || name)
  FROM (VALUES ('core',    '{}'::text[]),
               ('util',    '{core}'),            -- the diamond: core -> util, log -> config
               ('log',     '{core}'),
               ('config',  '{util,log}'),
               ('net',     '{config}'),          -- a chain: net -> http -> web -> admin
               ('http',    '{net}'),
               ('web',     '{http}'),
               ('admin',   '{web}'),
               ('db',      '{core}'),            -- another chain: db -> cache -> queue
               ('cache',   '{db}'),
               ('queue',   '{cache}'),
               ('auth',    '{db,config}'),       -- joins both branches
               ('worker',  '{queue,auth}'),
               ('sdk',     '{http,json}'),
               ('json',    '{}'),                -- independent leaves
               ('cli',     '{}'),
               ('metrics', '{}'),
               ('mail',    '{}'),
               ('search',  '{}'),
               ('storage', '{}')) AS p(name, depends_on);

-- A build: refuses to run before every dependency is published.
CREATE FUNCTION example_build.compile(p_name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p example_build.package;
    missing text[];
    f text;
BEGIN
    SELECT * INTO STRICT p FROM example_build.package WHERE name = p_name;
    SELECT array_agg(d) INTO missing
      FROM unnest(p.depends_on) d
     WHERE NOT EXISTS (SELECT 1 FROM example_build.artifact a WHERE a.package = d AND a.published);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'cannot build %: not published yet: %', p_name, missing;
    END IF;
    PERFORM pg_sleep(0.1 + ('x' || substr(p.source_hash, 5, 2))::bit(8)::int / 640.0);
    f := p.name || '-' || p.version || '.tar.gz';
    INSERT INTO example_build.artifact (package, file, sha256, size_bytes)
    VALUES (p.name, f, encode(sha256(convert_to(p.source_hash || p.version, 'UTF8')), 'hex'),
            40000 + ('x' || substr(p.source_hash, 1, 4))::bit(16)::int);
    RETURN f;
END;
$$;

SELECT bf_register('example_package_build', $json${
  "description": "Build and publish every package in dependency order, four at a time",
  "nodes": [
    {"id": "packages", "type": "activity", "activity": "sql",
     "sql": "SELECT jsonb_agg(jsonb_build_object('name', name, 'version', version, 'deps', to_jsonb(depends_on)) ORDER BY name) FROM example_build.package",
     "output": "packages"},
    {"id": "build", "type": "loop", "loopType": "parallel", "concurrency": 4,
     "inputSource": {"variable": "packages"},
     "dependsOn": {"key": "name", "after": "deps"},
     "errorStrategy": "fail-fast",
     "children": [
       {"id": "compile", "type": "activity", "activity": "sql",
        "sql": "SELECT example_build.compile($1 ->> 'name')"},
       {"id": "publish", "type": "activity", "activity": "sql",
        "sql": "UPDATE example_build.artifact SET published = true WHERE file = $3 ->> 'prev' RETURNING 'published ' || file"}
     ]}
  ]
}$json$) > 0 AS registered;

SELECT bf_start('example_package_build') AS run \gset
SELECT bf_wait(:run) AS status;

-- The result: 20 artifacts built and published, at most four builds at
-- any instant, and no build started before all its dependencies had
-- finished (computed from the items' start and finish times).
SELECT status, count(*) AS packages
  FROM batchflow.items WHERE run_id = :run AND loop_id = 'build'
 GROUP BY status ORDER BY status;
SELECT count(*) AS artifacts, count(*) FILTER (WHERE published) AS published
  FROM example_build.artifact;
SELECT max(running) <= 4 AS at_most_4_at_once
  FROM (SELECT (SELECT count(*) FROM batchflow.items o
                 WHERE o.run_id = i.run_id AND o.loop_id = 'build'
                   AND o.started_at <= i.started_at AND o.finished_at > i.started_at) AS running
          FROM batchflow.items i WHERE i.run_id = :run AND i.loop_id = 'build') s;
SELECT bool_and(d.finished_at <= i.started_at) AS dependencies_first
  FROM batchflow.items i
  JOIN example_build.package p ON p.name = i.item ->> 'name'
  JOIN batchflow.items d ON d.run_id = i.run_id AND d.loop_id = 'build'
                        AND d.item ->> 'name' = ANY (p.depends_on)
 WHERE i.run_id = :run AND i.loop_id = 'build';
SELECT i.item ->> 'name' AS package, p.depends_on, i.output AS result
  FROM batchflow.items i JOIN example_build.package p ON p.name = i.item ->> 'name'
 WHERE i.run_id = :run AND i.loop_id = 'build'
 ORDER BY i.idx;
