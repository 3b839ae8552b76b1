-- Indexes that start with namespace, for the history API's lists (decision 0021).
-- depends: 0002_record_revision_function
-- transactional: false
--
-- The history API lists one namespace at a time, in the order (namespace, kind, name, revision)
-- for revisions and (at, id) for audit events, and pages with a row comparison on those keys.
-- The indexes of 0001 start with kind (revisions) and at or kind (audit_log), so a namespace's
-- list walked the whole index, and the newest audit rows of a small namespace were found by
-- scanning every tenant's rows. These serve those lists, their pages and `-A` (all namespaces,
-- in the same order) as index range scans.
--
-- CONCURRENTLY (so outside a transaction): building them does not block the operator's writes
-- on a large table. A build that failed leaves an invalid index behind and the migration
-- unrecorded; the DROP makes the next attempt start afresh.
DROP INDEX CONCURRENTLY IF EXISTS revisions_namespace_object;
CREATE INDEX CONCURRENTLY revisions_namespace_object
    ON revisions (namespace, kind, name, revision);
DROP INDEX CONCURRENTLY IF EXISTS audit_log_namespace_at;
CREATE INDEX CONCURRENTLY audit_log_namespace_at ON audit_log (namespace, at, id);
