-- Bulk email sender: queue a personalised welcome mail for each of 100
-- users, one at a time, into an outbox table that a mail relay would drain.
--
--   psql -d DB -f examples/bulk_email.sql
--
-- Ten of the generated addresses are invalid.  The outbox refuses them with
-- a CHECK constraint, so their items fail; the loop's "continue" strategy
-- records each failure and goes on with the next user.  The run succeeds
-- with 90 mails queued and 10 failed items, listed by bf_report.
--
-- Everything lives in schema example_email, dropped and recreated on every
-- load, so the file can be run again and again.

\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
DROP SCHEMA IF EXISTS example_email CASCADE;
RESET client_min_messages;
CREATE SCHEMA example_email;

CREATE TABLE example_email.app_user (
    id          int PRIMARY KEY,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    email       text NOT NULL,
    signed_up   date NOT NULL
);

CREATE TABLE example_email.outbox (
    user_id     int PRIMARY KEY REFERENCES example_email.app_user,
    recipient   text NOT NULL CHECK (recipient ~ '^[^@\s]+@[^@\s]+\.[a-z]{2,}$'),
    subject     text NOT NULL,
    body        text NOT NULL,
    unsubscribe text NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- 100 users; every tenth address (ids 7, 17, ..., 97) is mistyped in one
-- of three ways: no @, a double @, or a space.
INSERT INTO example_email.app_user
SELECT g,
       f.name,
       l.name,
       CASE WHEN g % 10 <> 7 THEN lower(f.name || '.' || l.name) || g || '@' || d.name
            WHEN g % 3 = 0 THEN lower(f.name || '.' || l.name) || g || d.name
            WHEN g % 3 = 1 THEN lower(f.name || '.' || l.name) || g || '@@' || d.name
            ELSE lower(f.name || ' ' || l.name) || g || '@' || d.name
       END,
       date '2024-01-01' + (('x' || substr(md5(g::text), 1, 6))::bit(24)::int % 365)
  FROM generate_series(1, 100) g,
       LATERAL (SELECT (ARRAY['Ada', 'Grace', 'Edsger', 'Barbara', 'Donald', 'Frances',
                               'Ken', 'Margaret', 'Niklaus', 'Radia'])[1 + (g + g / 10) % 10] AS name) f,
       LATERAL (SELECT (ARRAY['Lovelace', 'Hopper', 'Dijkstra', 'Liskov', 'Knuth', 'Allen',
                               'Thompson', 'Hamilton', 'Wirth'])[1 + g % 9] AS name) l,
       LATERAL (SELECT (ARRAY['example.com', 'example.org', 'mail.example.net'])[1 + g % 3] AS name) d;

-- pick: the ids of the users to mail, in id order (saved as "users").
-- send: one user at a time; a failing user is recorded and skipped over.
SELECT bf_register('example_bulk_email', $json${
  "description": "Queue a welcome mail for every user",
  "nodes": [
    {"id": "pick", "type": "activity", "activity": "sql",
     "sql": "SELECT jsonb_agg(id ORDER BY id) FROM example_email.app_user",
     "output": "users"},
    {"id": "send", "type": "loop", "loopType": "sequential",
     "inputSource": {"variable": "users"},
     "errorStrategy": "continue",
     "children": [
       {"id": "queue", "type": "activity", "activity": "sql",
        "sql": "INSERT INTO example_email.outbox (user_id, recipient, subject, body, unsubscribe) SELECT id, email, 'Welcome, ' || first_name || '!', format('Hello %s %s, thank you for signing up on %s.', first_name, last_name, to_char(signed_up, 'FMMonth FMDD, YYYY')), 'https://example.com/unsubscribe/' || md5(id || ':' || email) FROM example_email.app_user WHERE id = ($1)::int RETURNING recipient"}
     ]}
  ]
}$json$) > 0 AS registered;

SELECT bf_start('example_bulk_email') AS run \gset
SELECT bf_wait(:run) AS status;

-- The result: 90 mails queued, 10 users failed with the reason.
SELECT status, count(*) AS users
  FROM batchflow.items WHERE run_id = :run AND loop_id = 'send'
 GROUP BY status ORDER BY status;
SELECT count(*) AS queued, count(DISTINCT recipient) AS recipients FROM example_email.outbox;
SELECT (r.item)::int AS user_id, u.email, split_part(r.error, ' (Failing row', 1) AS error
  FROM bf_report(:run) r
  JOIN example_email.app_user u ON u.id = (r.item)::int
 ORDER BY r.idx;
