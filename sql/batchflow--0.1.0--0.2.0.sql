-- batchflow 0.1.0 -> 0.2.0
--
-- Every schema change of release 0.2.0, in one script, so that
-- ALTER EXTENSION batchflow UPDATE gives exactly the schema of a fresh
-- install of 0.2.0 (sql/parts/, assembled into sql/batchflow--0.2.0.sql).
-- A TAP test compares the two.  Each change is made here AND in the part
-- that owns the object; sections are appended in the order they landed, one
-- section per subject, each headed by a comment that says what it changes.
--
-- Objects created here declare their security attributes (security_barrier,
-- SET search_path) in the same statement, so that a later CREATE OR REPLACE
-- cannot silently drop them.

\echo Use "ALTER EXTENSION batchflow UPDATE TO '0.2.0'" to load this file. \quit
