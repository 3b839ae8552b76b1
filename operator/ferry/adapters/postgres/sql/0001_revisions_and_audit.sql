-- Revisions: one row per distinct resolved content of an object, numbered per object.
-- Numbering is per (kind, namespace, name), so history continues across delete/re-create.
CREATE TABLE revisions (
    id          bigserial PRIMARY KEY,
    kind        text        NOT NULL,
    uid         text        NOT NULL,
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    revision    integer     NOT NULL,
    content     jsonb       NOT NULL,   -- the resolved content (what workloads get)
    spec        jsonb       NOT NULL,   -- the spec that produced it (what rollback writes back)
    hash        text        NOT NULL,
    changed_by  text,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, namespace, name, revision)
);
CREATE INDEX revisions_object_created ON revisions (kind, namespace, name, created_at);

-- The audit trail is kept apart from revisions so it can be retained longer.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text        NOT NULL,
    kind        text        NOT NULL,
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    uid         text,
    username    text,
    revision    integer,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_object ON audit_log (kind, namespace, name, at);
