-- Data migration: move 1000 customer records from a legacy table (text
-- columns, European dates, amounts in cents as text) into a clean target
-- table, ten records at a time, each exactly once.
--
--   psql -d DB -f examples/data_migration.sql
--
-- Each item converts and inserts one record.  The insert commits together
-- with the item's completion, so even if a worker is killed or the server
-- crashes in the middle, every record is migrated exactly once.  The target
-- table's primary key would make a second insert of a record fail, so the
-- result below proves it: 1000 rows, every item succeeded at its first
-- attempt, and the totals match the legacy table.
--
-- Everything lives in schema example_migration, dropped and recreated on
-- every load, so the file can be run again and again.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
DROP SCHEMA IF EXISTS example_migration CASCADE;
RESET client_min_messages;
CREATE SCHEMA example_migration;

-- The old system stored everything as text.
CREATE TABLE example_migration.legacy_customer (
    cust_no       text PRIMARY KEY,
    full_name     text,
    email         text,
    phone         text,
    created       text,
    country       text,
    balance_cents text
);

CREATE TABLE example_migration.customer (
    id          int PRIMARY KEY,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    email       text NOT NULL UNIQUE,
    phone       text,
    created_on  date NOT NULL,
    country     char(2) NOT NULL,
    balance     numeric(12, 2) NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- 1000 legacy records with mixed-case e-mails, padded names, phones in
-- several formats and missing phone numbers.
INSERT INTO example_migration.legacy_customer
SELECT format('C%s', lpad(g::text, 6, '0')),
       '  ' || f.name || ' ' || l.name || ' ',
       f.name || '.' || l.name || g || '@Example.' || (ARRAY['com', 'org', 'net'])[1 + g % 3],
       CASE g % 4 WHEN 0 THEN NULL
                  WHEN 1 THEN '+1 555 ' || lpad((g * 37 % 10000)::text, 4, '0')
                  WHEN 2 THEN '(555) ' || lpad((g * 37 % 10000)::text, 4, '0')
                  ELSE '555-' || lpad((g * 37 % 10000)::text, 4, '0') END,
       to_char(date '2015-01-01' + (g * 3 % 3650), 'DD/MM/YYYY'),
       (ARRAY['us', 'de', 'fr', 'jp', 'br', 'in'])[1 + g % 6],
       ((('x' || substr(m.h, 20, 6))::bit(24)::int % 2000000) - 500000)::text
  FROM generate_series(1, 1000) g,
       LATERAL (SELECT md5('customer ' || g) AS h) m,
       LATERAL (SELECT (ARRAY['Olivia', 'Liam', 'Emma', 'Noah', 'Amelia', 'Oliver', 'Sofia', 'Elijah',
                              'Mia', 'Lucas', 'Hana', 'Mateo', 'Aiko', 'Ravi', 'Chloe', 'Jonas',
                              'Lea', 'Paulo', 'Ines', 'Kenji'])
                       [1 + ('x' || substr(m.h, 1, 4))::bit(16)::int % 20] AS name) f,
       LATERAL (SELECT (ARRAY['Smith', 'Müller', 'Martin', 'Tanaka', 'Silva', 'Patel', 'Garcia',
                              'Schmidt', 'Bernard', 'Sato', 'Santos', 'Sharma', 'Johnson',
                              'Weber', 'Dubois', 'Suzuki', 'Costa', 'Singh', 'Brown', 'Fischer'])
                       [1 + ('x' || substr(m.h, 5, 4))::bit(16)::int % 20] AS name) l;

SELECT bf_register('example_data_migration', $json${
  "description": "Migrate legacy customers into example_migration.customer, ten at a time",
  "nodes": [
    {"id": "select", "type": "activity", "activity": "sql",
     "sql": "SELECT jsonb_agg(cust_no ORDER BY cust_no) FROM example_migration.legacy_customer",
     "output": "customers"},
    {"id": "migrate", "type": "loop", "loopType": "parallel", "concurrency": 10,
     "inputSource": {"variable": "customers"},
     "errorStrategy": "retry", "maxRetries": 2, "retryDelayMs": 200,
     "children": [
       {"id": "copy", "type": "activity", "activity": "sql",
        "sql": "INSERT INTO example_migration.customer (id, first_name, last_name, email, phone, created_on, country, balance) SELECT substr(cust_no, 2)::int, split_part(btrim(full_name), ' ', 1), split_part(btrim(full_name), ' ', 2), lower(email), nullif(regexp_replace(phone, '[^0-9]', '', 'g'), ''), to_date(created, 'DD/MM/YYYY'), upper(country), balance_cents::numeric / 100 FROM example_migration.legacy_customer WHERE cust_no = $1 #>> '{}' RETURNING id"}
     ]}
  ]
}$json$) > 0 AS registered;

SELECT bf_start('example_data_migration') AS run \gset
SELECT bf_wait(:run) AS status;

-- The result: every record migrated once, at its first attempt, with the
-- same totals as the legacy table.
SELECT status, count(*) AS records, max(attempts) AS max_attempts
  FROM batchflow.items WHERE run_id = :run AND loop_id = 'migrate'
 GROUP BY status ORDER BY status;
SELECT (SELECT count(*) FROM example_migration.legacy_customer) AS legacy,
       count(*) AS migrated,
       count(DISTINCT id) AS distinct_ids,
       sum(balance) = (SELECT sum(balance_cents::numeric) / 100
                         FROM example_migration.legacy_customer) AS balances_match,
       count(*) FILTER (WHERE phone IS NULL) AS without_phone
  FROM example_migration.customer;
SELECT id, first_name, last_name, email, phone, created_on, country, balance
  FROM example_migration.customer ORDER BY id LIMIT 3;
