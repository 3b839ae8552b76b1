-- Record a revision in one round trip.
-- depends: 0001_revisions_and_audit
--
-- The operator calls this on the path from a change to its ConfigMap; done from Python it took
-- six round trips (BEGIN, lock, read latest, insert revision, insert audit, COMMIT). As one
-- statement it is one round trip and its own transaction.
--
-- Idempotent by content hash: when the latest revision of the object (same uid) already has
-- p_hash, nothing is written and that revision is returned with created = false. A re-created
-- object (new uid) always gets a new revision, so history can tell "deleted, then created again"
-- from "deleted". The advisory lock serialises concurrent callers for one object; each statement
-- of a plpgsql function takes a fresh snapshot, so the read after the lock sees the latest row.
CREATE FUNCTION ferry_record_revision(
    p_kind text,
    p_uid text,
    p_namespace text,
    p_name text,
    p_content jsonb,
    p_spec jsonb,
    p_hash text,
    p_changed_by text,
    p_reason text,
    p_action text
)
RETURNS TABLE (
    created     boolean,
    id          bigint,
    kind        text,
    uid         text,
    namespace   text,
    name        text,
    revision    integer,
    content     jsonb,
    spec        jsonb,
    hash        text,
    changed_by  text,
    reason      text,
    created_at  timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    latest revisions%ROWTYPE;
    has_latest boolean;
    written revisions%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended(p_kind || '/' || p_namespace || '/' || p_name, 0));
    SELECT * INTO latest FROM revisions r
     WHERE r.kind = p_kind AND r.namespace = p_namespace AND r.name = p_name
     ORDER BY r.revision DESC LIMIT 1;
    has_latest := FOUND;
    IF has_latest AND latest.uid = p_uid AND latest.hash = p_hash THEN
        RETURN QUERY SELECT false, latest.*;
        RETURN;
    END IF;
    INSERT INTO revisions AS r (kind, uid, namespace, name, revision, content, spec, hash,
                                changed_by, reason)
    VALUES (p_kind, p_uid, p_namespace, p_name,
            CASE WHEN has_latest THEN latest.revision + 1 ELSE 1 END,
            p_content, p_spec, p_hash, p_changed_by, p_reason)
    RETURNING r.* INTO written;
    INSERT INTO audit_log (action, kind, namespace, name, uid, username, revision, details)
    VALUES (CASE WHEN has_latest AND latest.uid = p_uid THEN p_action ELSE 'created' END,
            p_kind, p_namespace, p_name, p_uid, p_changed_by, written.revision,
            jsonb_build_object('hash', p_hash, 'reason', p_reason));
    RETURN QUERY SELECT true, written.*;
END
$$;
