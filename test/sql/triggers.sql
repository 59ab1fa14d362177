-- Starting runs from table triggers: batchflow.start_trigger and a
-- hand-written trigger calling bf_start(..., to_jsonb(NEW)).  A committed
-- insert starts a run whose items see the row; a rolled-back insert starts
-- nothing; the run belongs to the role whose insert fired the trigger.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS batchflow;
RESET client_min_messages;

CREATE TABLE trg_order (id int PRIMARY KEY, customer text NOT NULL, lines jsonb NOT NULL);
CREATE TABLE trg_shipped (order_id int NOT NULL, idx int NOT NULL, sku text NOT NULL,
                          qty int NOT NULL, customer text NOT NULL,
                          PRIMARY KEY (order_id, idx));

-- The workflow reads the order from the run's variables: a top-level
-- activity picks the array of lines out of the row, the loop ships each line.
SELECT bf_register('trg_ship', $j${"nodes": [
  {"id": "lines", "type": "activity", "activity": "sql",
   "sql": "SELECT $3 #> '{vars,order,lines}'", "output": "lines"},
  {"id": "ship", "type": "loop", "loopType": "parallel", "concurrency": 3,
   "inputSource": {"variable": "lines"},
   "children": [{"id": "put", "type": "activity", "activity": "sql",
                 "sql": "INSERT INTO trg_shipped VALUES (($3 #>> '{vars,order,id}')::int, $2, $1 ->> 'sku', ($1 ->> 'qty')::int, $3 #>> '{vars,order,customer}') RETURNING sku"}]}]}$j$) > 0 AS registered;

CREATE TRIGGER trg_order_ship AFTER INSERT ON trg_order
    FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger('trg_ship', 'order');

-- A committed insert starts one run with the row as input.
INSERT INTO trg_order VALUES
    (1, 'ada', '[{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}, {"sku": "C-3", "qty": 5}]');
SELECT id AS run1 FROM batchflow.runs
 WHERE workflow = 'trg_ship' AND input #>> '{order,id}' = '1' \gset
SELECT bf_wait(:run1, '1 minute');
SELECT status, error, input -> 'order' AS "order", input -> 'trigger' AS "trigger"
  FROM batchflow.runs WHERE id = :run1;
SELECT order_id, idx, sku, qty, customer FROM trg_shipped ORDER BY order_id, idx;

-- A multi-row insert starts one run per row.
INSERT INTO trg_order VALUES
    (2, 'grace', '[{"sku": "D-4", "qty": 1}]'),
    (3, 'edsger', '[]');
SELECT count(*) AS runs, count(DISTINCT input #>> '{order,id}') AS orders
  FROM batchflow.runs WHERE workflow = 'trg_ship' AND input #>> '{order,id}' IN ('2', '3');
SELECT bool_and(bf_wait(id, '1 minute') = 'succeeded') AS all_succeeded
  FROM batchflow.runs WHERE workflow = 'trg_ship' AND input #>> '{order,id}' IN ('2', '3');
SELECT order_id, idx, sku, qty, customer FROM trg_shipped WHERE order_id > 1 ORDER BY order_id, idx;

-- A rolled-back insert: the run is visible inside the transaction, and
-- gone with it.  Nothing is ever shipped for order 4.
BEGIN;
INSERT INTO trg_order VALUES (4, 'barbara', '[{"sku": "E-5", "qty": 9}]');
SELECT count(*) AS runs_inside FROM batchflow.runs
 WHERE workflow = 'trg_ship' AND input #>> '{order,id}' = '4';
ROLLBACK;
SELECT count(*) AS runs_after FROM batchflow.runs
 WHERE workflow = 'trg_ship' AND input #>> '{order,id}' = '4';
-- A later committed run finishes after anything the workers could have
-- picked up from the rolled-back transaction.
INSERT INTO trg_order VALUES (5, 'ken', '[{"sku": "F-6", "qty": 3}]');
SELECT bf_wait(id, '1 minute') FROM batchflow.runs
 WHERE workflow = 'trg_ship' AND input #>> '{order,id}' = '5';
SELECT count(*) FILTER (WHERE order_id = 4) AS shipped_4,
       count(*) FILTER (WHERE order_id = 5) AS shipped_5 FROM trg_shipped;

-- A failing bf_start aborts the insert: no row without its run.
CREATE TRIGGER trg_order_missing AFTER INSERT ON trg_order
    FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger('trg_no_such_workflow');
INSERT INTO trg_order VALUES (6, 'niklaus', '[]');
SELECT count(*) AS order_6 FROM trg_order WHERE id = 6;
DROP TRIGGER trg_order_missing ON trg_order;

-- The default key is "row"; UPDATE and DELETE triggers pass NEW and OLD.
CREATE TABLE trg_event (id int PRIMARY KEY, tags text[] NOT NULL);
SELECT bf_register('trg_echo', $j${"nodes": [
  {"id": "echo", "type": "activity", "activity": "sql",
   "sql": "SELECT jsonb_build_object('id', $3 #> '{vars,row,id}', 'op', $3 #> '{vars,trigger,operation}')"}]}$j$) > 0 AS registered;
CREATE TRIGGER trg_event_echo AFTER INSERT OR UPDATE OR DELETE ON trg_event
    FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger('trg_echo');
INSERT INTO trg_event VALUES (10, '{a,b}');
UPDATE trg_event SET id = 11, tags = '{c}';
DELETE FROM trg_event;
SELECT bool_and(bf_wait(id, '1 minute') = 'succeeded') AS all_succeeded
  FROM batchflow.runs WHERE workflow = 'trg_echo';
SELECT r.input, i.output
  FROM batchflow.runs r JOIN batchflow.items i ON i.run_id = r.id
 WHERE r.workflow = 'trg_echo' ORDER BY r.id;

-- A BEFORE trigger leaves the row as it is.
CREATE TABLE trg_before (id int PRIMARY KEY, note text);
CREATE TRIGGER trg_before_echo BEFORE INSERT OR DELETE ON trg_before
    FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger('trg_echo');
INSERT INTO trg_before VALUES (20, 'kept');
SELECT * FROM trg_before;
DELETE FROM trg_before WHERE id = 20;
SELECT count(*) AS left_after_delete FROM trg_before;

-- Misuse is reported clearly.
CREATE TRIGGER trg_event_stmt AFTER INSERT ON trg_event
    FOR EACH STATEMENT EXECUTE FUNCTION batchflow.start_trigger('trg_echo');
INSERT INTO trg_event VALUES (12, '{}');
DROP TRIGGER trg_event_stmt ON trg_event;
CREATE TRIGGER trg_event_noarg AFTER INSERT ON trg_event
    FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger();
INSERT INTO trg_event VALUES (12, '{}');
DROP TRIGGER trg_event_noarg ON trg_event;
CREATE TRIGGER trg_event_badkey AFTER INSERT ON trg_event
    FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger('trg_echo', 'trigger');
INSERT INTO trg_event VALUES (12, '{}');
DROP TRIGGER trg_event_badkey ON trg_event;
SELECT count(*) AS events FROM trg_event;

-- A hand-written trigger: bf_start with to_jsonb(NEW) works the same way.
CREATE FUNCTION trg_custom_start() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bf_start('trg_ship', jsonb_build_object('order', to_jsonb(NEW)));
    RETURN NULL;
END;
$$;
DROP TRIGGER trg_order_ship ON trg_order;
CREATE TRIGGER trg_order_custom AFTER INSERT ON trg_order
    FOR EACH ROW EXECUTE FUNCTION trg_custom_start();
INSERT INTO trg_order VALUES (7, 'john', '[{"sku": "G-1", "qty": 4}, {"sku": "H-2", "qty": 6}]');
SELECT bf_wait(id, '1 minute') FROM batchflow.runs
 WHERE workflow = 'trg_ship' AND input #>> '{order,id}' = '7';
SELECT order_id, idx, sku, qty, customer FROM trg_shipped WHERE order_id = 7 ORDER BY idx;
BEGIN;
INSERT INTO trg_order VALUES (8, 'tony', '[{"sku": "I-9", "qty": 1}]');
ROLLBACK;
SELECT count(*) AS runs_for_8 FROM batchflow.runs
 WHERE workflow = 'trg_ship' AND input #>> '{order,id}' = '8';

-- The trigger function is SECURITY INVOKER: the run belongs to the role
-- whose insert fired it, and its activities run as that role.
SELECT prosecdef FROM pg_proc WHERE oid = 'batchflow.start_trigger()'::regprocedure;
CREATE ROLE trg_alice;
CREATE ROLE trg_bob;
GRANT USAGE ON SCHEMA batchflow TO trg_alice, trg_bob;
CREATE TABLE trg_signup (email text PRIMARY KEY);
CREATE TABLE trg_welcome (email text PRIMARY KEY, sent_by name NOT NULL);
GRANT INSERT ON trg_signup TO trg_alice, trg_bob;
GRANT SELECT, INSERT ON trg_welcome TO trg_alice;
SET ROLE trg_alice;
SELECT bf_register('trg_welcome', $j${"nodes": [
  {"id": "send", "type": "activity", "activity": "sql",
   "sql": "INSERT INTO trg_welcome VALUES ($3 #>> '{vars,row,email}', current_user) RETURNING email"}]}$j$) > 0 AS registered;
RESET ROLE;
CREATE TRIGGER trg_signup_welcome AFTER INSERT ON trg_signup
    FOR EACH ROW EXECUTE FUNCTION batchflow.start_trigger('trg_welcome');
SET ROLE trg_alice;
INSERT INTO trg_signup VALUES ('alice@example.com');
RESET ROLE;
SELECT bf_wait(id, '1 minute'), owner, error FROM batchflow.runs WHERE workflow = 'trg_welcome';
SELECT * FROM trg_welcome;
-- trg_bob may insert into the table but not start trg_alice's workflow:
-- his insert fails as a whole.
SET ROLE trg_bob;
INSERT INTO trg_signup VALUES ('bob@example.com');
RESET ROLE;
SELECT count(*) AS signups FROM trg_signup;

-- Clean up.
DROP TABLE trg_order, trg_shipped, trg_event, trg_before, trg_signup, trg_welcome;
DROP FUNCTION trg_custom_start();
DELETE FROM batchflow.run
 WHERE version_id IN (SELECT id FROM batchflow.workflow_version
                       WHERE workflow IN ('trg_ship', 'trg_echo', 'trg_welcome'));
DELETE FROM batchflow.workflow WHERE name IN ('trg_ship', 'trg_echo', 'trg_welcome');
REVOKE USAGE ON SCHEMA batchflow FROM trg_alice, trg_bob;
DROP ROLE trg_alice;
DROP ROLE trg_bob;
