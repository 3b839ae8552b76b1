"""Every label, annotation and finalizer name Ferry reads or writes, in one place.

Label values are limited to 63 characters, so only short identifiers (uids) go in labels; names,
which may be up to 253 characters, go in annotations.
"""

# --- on every object Ferry materialises (ConfigMaps, Secrets) ---------------------------------
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_FERRY = "ferry"
PART_OF = "app.kubernetes.io/part-of"
ENTRY_UID = "ferry.dev/entry-uid"

ENTRY_NAMESPACE = "ferry.dev/entry-namespace"
ENTRY_NAME = "ferry.dev/entry-name"
REVISION = "ferry.dev/revision"
HASH = "ferry.dev/hash"
RENDERED_HASH = "ferry.dev/rendered-hash"

# --- the one ferry-flags ConfigMap of a namespace ----------------------------------------------
FLAGSET = "ferry.dev/flagset"
FLAGS_LISTING = "ferry.dev/flags"  # JSON: flag key → source namespace, name, uid, revision

# --- set by users on Ferry objects (stamped by the mutating webhook) ---------------------------
CHANGE_REASON = "ferry.dev/change-reason"
CHANGED_BY = "ferry.dev/changed-by"
CHANGED_AT = "ferry.dev/changed-at"

# --- set by namespace owners: which sources may write into the namespace ------------------------
ACCEPT = "ferry.dev/accept"
ACCEPT_FROM = "ferry.dev/accept-from"

# --- set by the platform team on a namespace: Vault paths its entries may name (comma-separated) --
VAULT_PATHS = "ferry.dev/vault-paths"

# --- set by users on a ConfigEntry: a new value re-reads its secrets from Vault now -------------
REFRESH = "ferry.dev/refresh"

# --- workloads rolled on change ------------------------------------------------------------------
RELOAD_ON = "ferry.dev/reload-on"
CONFIG_HASH = "ferry.dev/config-hash"

# --- on a shard's Lease: a replica holding no shard asks the holder for this one -----------------
LEASE_HANDOVER = "ferry.dev/handover-to"

FINALIZER = "ferry.dev/cleanup"

# --- on webhook configurations and APIServices: the Secret whose ca.crt goes in their caBundle ----
INJECT_CA_FROM = "ferry.dev/inject-ca-from"  # "<namespace>/<name>", as cert-manager's annotation
