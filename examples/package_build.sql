-- Multi-package build: build 20 packages of a monorepo, four at a time.
--
--   psql -d DB -f examples/package_build.sql
--
-- Each package lists its dependencies, but every package builds against the
-- already published versions of them, so the build order does not matter
-- and the packages can be built in parallel.  A build is simulated: it takes
-- between 0.1 and 0.5 s (pg_sleep) and writes an artifact with a checksum.
-- The loop is parallel at concurrency 4: never more than four builds at
-- once, and a freed slot is refilled at once.  Two children per package:
-- "compile" returns the artifact name, which "publish" receives as "prev".
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

-- 20 packages: core first, then libraries and tools that depend on a few
-- of the packages listed before them.
INSERT INTO example_build.package
SELECT p.name,
       format('%s.%s.%s', 1 + g % 3, g % 7, g % 11),
       CASE WHEN g = 1 THEN '{}'
            ELSE ARRAY(SELECT DISTINCT n.name
                         FROM generate_series(1, 1 + g % 3) k,
                              LATERAL (SELECT (ARRAY['core', 'util', 'log', 'config', 'net', 'db',
                                                     'auth', 'cache', 'queue', 'http', 'json', 'cli',
                                                     'metrics', 'mail', 'search', 'storage', 'web',
                                                     'admin', 'worker', 'sdk'])
                                                [1 + (g * 7 + k * 3) % (g - 1)] AS name) n
                        ORDER BY 1)
       END,
       md5('source of ' || p.name)
  FROM generate_series(1, 20) g,
       LATERAL (SELECT (ARRAY['core', 'util', 'log', 'config', 'net', 'db', 'auth', 'cache',
                              'queue', 'http', 'json', 'cli', 'metrics', 'mail', 'search',
                              'storage', 'web', 'admin', 'worker', 'sdk'])[g] AS name) p;

SELECT bf_register('example_package_build', $json${
  "description": "Build and publish every package, four at a time",
  "nodes": [
    {"id": "packages", "type": "activity", "activity": "sql",
     "sql": "SELECT jsonb_agg(jsonb_build_object('name', name, 'version', version) ORDER BY name) FROM example_build.package",
     "output": "packages"},
    {"id": "build", "type": "loop", "loopType": "parallel", "concurrency": 4,
     "inputSource": {"variable": "packages"},
     "errorStrategy": "fail-fast",
     "children": [
       {"id": "compile", "type": "activity", "activity": "sql",
        "sql": "INSERT INTO example_build.artifact (package, file, sha256, size_bytes) SELECT p.name, p.name || '-' || p.version || '.tar.gz', encode(sha256(convert_to(p.source_hash || p.version, 'UTF8')), 'hex'), 40000 + ('x' || substr(p.source_hash, 1, 4))::bit(16)::int FROM example_build.package p, pg_sleep(0.1 + ('x' || substr(p.source_hash, 5, 2))::bit(8)::int / 640.0) WHERE p.name = $1 ->> 'name' RETURNING file"},
       {"id": "publish", "type": "activity", "activity": "sql",
        "sql": "UPDATE example_build.artifact SET published = true WHERE file = $3 ->> 'prev' RETURNING 'published ' || file"}
     ]}
  ]
}$json$) > 0 AS registered;

SELECT bf_start('example_package_build') AS run \gset
SELECT bf_wait(:run) AS status;

-- The result: 20 artifacts built and published, at most four builds at
-- any instant (computed from the items' start and finish times).
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
SELECT i.idx, i.item ->> 'name' AS package, p.depends_on, i.output AS result
  FROM batchflow.items i JOIN example_build.package p ON p.name = i.item ->> 'name'
 WHERE i.run_id = :run AND i.loop_id = 'build'
 ORDER BY i.idx;
