"""Prometheus metrics. Labels carry kinds and results only: never names of secrets or values."""

from prometheus_client import Counter, Gauge, Histogram

from ferry.domain import kinds

RECONCILES = Counter("ferry_reconciles_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "ferry_reconcile_duration_seconds", "Time spent in one reconcile", ["kind"]
)
REVISIONS = Counter("ferry_revisions_recorded_total", "Revisions written to PostgreSQL", ["kind"])
DRIFT = Counter("ferry_drift_corrected_total", "Materialised objects restored after a hand edit")
READY = Gauge(
    "ferry_ready",
    "1 while this process answers /readyz with ok (a running pod that never gets ready is still"
    " scraped: up stays 1)",
)
STORE_UP = Gauge("ferry_store_up", "1 when the last PostgreSQL write succeeded")
CACHE_UP = Gauge("ferry_cache_up", "1 when the last Redis write succeeded")
CACHE_ERRORS = Counter("ferry_cache_errors_total", "Failed writes to Redis")
STORE_ERRORS = Counter(
    "ferry_store_errors_total", "Revisions that could not be recorded: PostgreSQL unavailable"
)
CACHE_SECONDS = Histogram(
    "ferry_cache_write_duration_seconds",
    "Time of one write to Redis (configuration, flags, change feed), failed ones included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
QUEUE_DEPTH = Gauge("ferry_queue_depth", "Keys waiting to be reconciled")
QUEUE_WAIT = Histogram(
    "ferry_queue_wait_seconds",
    "Time a key waited in the work queue before its reconcile began, by kind (a change made "
    "while its object was being reconciled waits for that reconcile too)",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
for _kind in (
    kinds.CONFIG_ENTRY.kind,
    kinds.CONFIG_SCHEMA.kind,
    kinds.FEATURE_FLAG.kind,
    kinds.FLAG_SET,
):
    QUEUE_WAIT.labels(_kind)  # exported from the start, so dashboards see every kind at 0
ENTRY_CHECKS = Counter(
    "ferry_entry_checks_total",
    "Entry checks (admission) and plans (reconcile) by where they ran: on the calling thread "
    "(provably cheap, within the namespace's share of it) or in a validation worker",
    ["pool", "where"],
)
VAULT_READS = Counter("ferry_vault_reads_total", "Secret reads sent to Vault (shared per path)")
VAULT_FAILURES = Counter(
    "ferry_vault_failures_total",
    "Entries whose secretData could not be read, by reason",
    ["reason"],
)
SHARDS = Gauge("ferry_shards", "Shards the namespaces are divided into (leader.shards)")
SHARDS_HELD = Gauge(
    "ferry_shards_held", "Shards whose Lease this replica holds and reconciles (0: standby)"
)
SHARD_LAST_RECONCILE = Gauge(
    "ferry_shard_last_reconcile_timestamp_seconds",
    "When this replica last started a reconcile of a key of the shard",
    ["shard"],
)
MATERIALISED = Gauge(
    "ferry_materialised_objects", "ConfigMaps and Secrets Ferry keeps in place, by kind", ["kind"]
)
STORE_SECONDS = Histogram(
    "ferry_store_record_duration_seconds", "Time to prove or record one revision in PostgreSQL"
)
FLAG_EVALUATIONS = Counter(
    "ferry_flag_evaluations_total",
    "Flag evaluations answered, by flag (namespace/key), variant and reason; flag and variant are "
    'bounded: past serve.flag_metric_limit flags (default 0) they count as "other"',
    ["flag", "variant", "reason"],
)
WEBHOOK_CERT_EXPIRY = Gauge(
    "ferry_webhook_certificate_expiry_timestamp_seconds",
    "When the serving certificate this replica's admission webhook presents expires",
)
CA_BUNDLE_INJECTIONS = Counter(
    "ferry_ca_bundle_injections_total",
    "CA bundles written into webhook configurations and APIServices (a rotation, or a repair)",
    ["kind"],
)
for _kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService"):
    CA_BUNDLE_INJECTIONS.labels(_kind)  # exported at 0 from the start: rate() and alerts see it
EVENTS_DROPPED = Counter(
    "ferry_events_dropped_total",
    "Events not written because too many were already waiting (ferry.adapters.events.MAX_QUEUED)",
)
