"""Names of the labels, annotations and finalizer Ferry reads and writes.

Label values are limited to 63 characters, so only short identifiers (uids) go in labels; names,
which may be up to 253 characters, go in annotations.
"""

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_FERRY = "ferry"
ENTRY_UID = "ferry.dev/entry-uid"

ENTRY_NAMESPACE = "ferry.dev/entry-namespace"
ENTRY_NAME = "ferry.dev/entry-name"
REVISION = "ferry.dev/revision"
HASH = "ferry.dev/hash"
RENDERED_HASH = "ferry.dev/rendered-hash"

CHANGE_REASON = "ferry.dev/change-reason"
CHANGED_BY = "ferry.dev/changed-by"
CHANGED_AT = "ferry.dev/changed-at"

RELOAD_ON = "ferry.dev/reload-on"
CONFIG_HASH = "ferry.dev/config-hash"

FINALIZER = "ferry.dev/cleanup"
