"""Every setting of the operator, in one place: grouped frozen dataclasses, a docstring per field.

This module is the single source of each setting's name, type, default and meaning. From it,
:mod:`ferry.settings.options` derives ``ferry run``'s options and ``FERRY_*`` environment
variables, and :mod:`ferry.settings.docs` the table in docs/configuration.md (a unit test fails
when the two differ). To add a setting, add a field with a docstring below; nothing else.

Naming: a field ``reconcile.resync_seconds`` is the option ``--reconcile-resync-seconds`` and the
variable ``FERRY_RECONCILE_RESYNC_SECONDS``. Names in use before the settings were grouped keep
working unchanged; ``Name(...)`` marks them (``--workers``, ``FERRY_REDIS_URL``, …).
Durations are seconds, as floats, and every name that holds one ends in ``_seconds``.

``Annotated`` carries what the command line and the docs need besides the type (bounds, older
names, environment-only credentials: see :mod:`ferry.settings.base`, which also checks every
value when a group is built). Credentials and URLs that may embed one are left out of ``repr``,
so a logged ``Settings`` never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from ferry.domain.shards import lease_name_problem
from ferry.settings.base import (
    ENV_ONLY,
    PORT,
    POSITIVE,
    SECONDS,
    Name,
    Range,
    SettingsError,
    SettingsGroup,
)


@dataclass(frozen=True)
class KubernetesSettings(SettingsGroup):
    """The Kubernetes API server whose ConfigSchemas, ConfigEntries and FeatureFlags Ferry
    serves."""

    kubeconfig: Annotated[str | None, Name("kubeconfig", env="KUBECONFIG")] = None
    """Kubeconfig file of the cluster. Unset: the pod's service account inside a cluster,
    otherwise ``~/.kube/config``."""

    watch_timeout_seconds: Annotated[float, SECONDS] = 300.0
    """How long the API server keeps each of the informers' watches open before Ferry starts a
    new one. Ferry lists again only if the watch cannot resume."""


@dataclass(frozen=True)
class DatabaseSettings(SettingsGroup):
    """PostgreSQL, where revisions and the audit log are recorded. Migrations are applied at start
    under an advisory lock, so several replicas may start at once."""

    url: str = field(repr=False)
    """libpq connection URI, e.g. ``postgresql://ferry@db.ferry-system:5432/ferry``. PostgreSQL
    down: entries turn ``Recorded=False`` and nothing new is written until it is back."""

    pool_max_size: Annotated[int, POSITIVE] = 10
    """Most connections open to PostgreSQL at once; the reconcile workers share them."""


@dataclass(frozen=True)
class CacheSettings(SettingsGroup):
    """Redis, the cache behind the read API and the change feed (channel ``ferry:changes``).
    Only a cache: Redis being down never blocks ConfigMaps, entries report ``Cached=False``."""

    url: Annotated[str, Name("redis-url")] = field(repr=False)
    """Redis URL, e.g. ``redis://redis.ferry-system:6379/0`` (``rediss://`` for TLS). With
    ``sentinels``, the sentinels name the server: only the URL's scheme, user, password and
    database are used, e.g. ``redis://:PASSWORD@mymaster/0``."""

    timeout_seconds: Annotated[float, SECONDS] = 2.0
    """How long connecting to Redis or one command may take before it counts as down."""

    stream_max_length: Annotated[int, POSITIVE] = 10_000
    """About how many changes the stream ``ferry:changes:stream`` keeps (``XADD MAXLEN ~``):
    a ``/v1/watch`` client of ``ferry serve`` that reconnects with ``Last-Event-ID`` is replayed
    what it missed while the stream still holds it, and told to re-read otherwise. Applied by
    ``ferry run``, which writes the stream."""

    sentinels: tuple[str, ...] = ()
    """Redis Sentinel: the sentinels' addresses, ``host:port`` each (``[::1]:26379`` for IPv6),
    separated by spaces in the variable; the option may be repeated. Set, every command goes
    to the primary that the sentinels name for ``sentinel_master``, asked again whenever a
    connection is made, so Ferry follows a failover. ``rediss://`` in ``url`` means TLS to the
    sentinels too. Empty: ``url`` names the one server."""

    sentinel_master: str = "mymaster"
    """Name under which the sentinels monitor the primary (``sentinel monitor <name> …`` in
    their configuration). Used only with ``sentinels``."""

    sentinel_password: Annotated[str | None, ENV_ONLY] = field(default=None, repr=False)
    """Password the sentinels themselves ask for (their ``requirepass``), when they do. The
    servers' password is the one in ``url``. Environment only, never logged."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sentinels:
            return
        for address in self.sentinels:
            try:
                host_and_port(address)
            except ValueError as exc:
                raise SettingsError(f"cache.sentinels: {exc}") from None
        if not self.sentinel_master.strip():
            raise SettingsError("cache.sentinel_master is empty: name the monitored primary")
        if not self.url.startswith(("redis://", "rediss://")):
            scheme = self.url.partition("://")[0] or self.url[:10]
            raise SettingsError(
                f"cache.url: with cache.sentinels the URL must be redis:// or rediss://, not"
                f" {scheme}:// (the sentinels name the server's address)"
            )

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """``sentinels`` as (host, port) pairs."""
        return tuple(host_and_port(address) for address in self.sentinels)


def host_and_port(address: str) -> tuple[str, int]:
    """``"10.0.0.7:26379"`` → ``("10.0.0.7", 26379)``; ``"[::1]:26379"`` → ``("::1", 26379)``;
    ``ValueError`` naming the address for anything else (the port is required)."""
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not sep or not host or (":" in host) != bracketed or "[" in host or "]" in host:
        raise ValueError(f"{address!r} is not host:port ([host]:port for an IPv6 address)")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{address!r}: the port must be a number from 1 to 65535")
    return host, int(port)


@dataclass(frozen=True)
class ApiSettings(SettingsGroup):
    """The operator's own HTTP port: ``/healthz``, ``/readyz``, ``/metrics`` (the read API is
    ``ferry serve``)."""

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` to serve other hosts, as in a pod)."""

    port: Annotated[int, PORT] = 8080
    """Port to listen on."""


@dataclass(frozen=True)
class ServeSettings(SettingsGroup):
    """``ferry serve``: the authenticated read API as its own process (docs/read-api.md). Only
    ``ferry serve`` reads these; it also reads the ``kubernetes``, ``database``, ``cache`` and
    ``flags`` groups."""

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` to serve other hosts, as in a pod)."""

    port: Annotated[int, PORT] = 8090
    """Port to listen on."""

    token_audience: str = "ferry"
    """Audience a caller's bearer token must be issued for (a projected service-account token
    with ``audience: ferry``), checked by TokenReview, so a token made for Ferry is useless
    against the Kubernetes API and the other way round. Set it to the API server's own audience
    (its ``--service-account-issuer``, e.g. ``https://kubernetes.default.svc``) to accept
    ordinary service-account tokens."""

    auth_cache_ttl_seconds: Annotated[float, SECONDS] = 10.0
    """How long a TokenReview or SubjectAccessReview answer is reused: a revoked RoleBinding or
    deleted service account keeps working for at most this long on each replica (never past the
    token's own expiry)."""

    heartbeat_seconds: Annotated[float, SECONDS] = 15.0
    """Interval of the comment lines sent on an idle ``/v1/watch`` stream, so proxies keep it
    open and clients can tell a dead connection from a quiet one."""

    flag_metric_limit: Annotated[int, Range(min=0, max=10000)] = 0
    """How many flags (``namespace/key``, the first seen) get series of their own, by variant, in
    ``ferry_flag_evaluations_total``; the rest count as ``flag="other"``. 0 keeps flag names off
    ``/metrics``, which anyone who reaches the port can read; a bound keeps the series few
    however many flags tenants make."""

    workers: Annotated[int, Range(min=1, max=64)] = 1
    """Server processes sharing the port (``SO_REUSEPORT``: the kernel spreads connections over
    them), each with its own caches and one Redis stream reader. More than 1 uses more than one
    CPU core per replica; each ``/metrics`` scrape answers for the one process it reaches."""

    max_connections: Annotated[int, POSITIVE] = 4096
    """Connections one server process holds at once; past it a new one is answered ``503`` and
    closed before anything is read, so no caller can take every file descriptor."""

    max_watches: Annotated[int, POSITIVE] = 2048
    """``/v1/watch`` streams one server process holds open at once (``429`` past it)."""

    max_watches_per_user: Annotated[int, POSITIVE] = 1024
    """``/v1/watch`` streams one user (a service account: every replica of an app that shares
    it) holds open on one server process (``429`` past it)."""

    reviews_per_second: Annotated[float, Range(min=0.1)] = 20.0
    """SubjectAccessReviews one user may cause per second on one server process once its burst
    is spent (``429`` with ``Retry-After`` past it). Answers are cached for
    ``auth_cache_ttl_seconds``, so re-reading the same objects costs nothing; this bounds what
    asking for ever new names costs the API server and PostgreSQL."""

    review_burst: Annotated[int, POSITIVE] = 200
    """SubjectAccessReviews one user may cause at once (e.g. reading that many different objects
    at start) before ``reviews_per_second`` applies."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # An empty audience used to mean "no audience": TokenReview without spec.audiences
        # accepts a token made for the API server itself, so any workload's ordinary
        # service-account token (readable by whoever can exec into its pod) would be accepted.
        if not self.token_audience.strip():
            raise SettingsError(
                "serve.token_audience (--serve-token-audience / FERRY_SERVE_TOKEN_AUDIENCE) must "
                "not be empty: tokens are checked against this audience (the default is 'ferry';"
                " to accept ordinary service-account tokens, give the API server's own audience,"
                " e.g. https://kubernetes.default.svc)"
            )


@dataclass(frozen=True)
class WebhookSettings(SettingsGroup):
    """The HTTPS server of the admission webhooks that validate every write (webhooks/README.md)."""

    option_prefix = "webhook"

    host: str = "127.0.0.1"
    """Address to listen on; a generated serving certificate is issued for it."""

    port: Annotated[int | None, PORT] = None
    """Port of the admission webhooks. Unset: ``ferry run`` serves none (in a cluster ``ferry
    webhooks`` answers them, decision 0035; with neither, nothing is validated at admission);
    ``ferry webhooks`` requires it."""

    cert_dir: Annotated[Path | None, Name("webhook-dir")] = None
    """Directory of the serving certificate: ``tls.crt``, ``tls.key`` and ``ca.crt`` found there
    (a mounted Secret, e.g. from cert-manager) are used as they are; otherwise Ferry generates a CA
    and a certificate there and registers the webhooks itself. With ``cert_secret``: where the
    Secret's files are written for the server (writable). Unset: a temporary directory."""

    client_ca_file: Path | None = None
    """CA bundle that verifies the client certificate the API server presents to the webhooks;
    a request without a certificate it signed is refused. Unset: no client certificate is
    asked for."""

    cert_secret: str | None = None
    """``<namespace>/<name>`` of the Secret in which the operator keeps the webhook's CA and
    serving certificate itself (decision 0022): every process serving the webhooks (``ferry
    webhooks``, or ``ferry run`` with a webhook port) serves the certificate it holds and reloads
    it when it changes; the operator's leader creates the Secret when it is missing, renews the
    certificate and the CA before they expire, and writes the CA bundle into every webhook
    configuration and APIService annotated ``ferry.dev/inject-ca-from: <namespace>/<name>``.
    Unset: ``cert_dir`` decides (a mounted certificate, e.g. cert-manager's, or a generated one)."""

    cert_hosts: tuple[str, ...] = ()
    """DNS names (or addresses) the kept serving certificate is issued for, e.g. the webhook
    Service's ``<service>.<namespace>.svc``; separated by spaces in the variable. Empty:
    ``host``."""

    cert_validity_seconds: Annotated[float, SECONDS] = 90 * 86400
    """Validity of each serving certificate the operator issues (never past its CA's): 90 days."""

    cert_renew_before_seconds: Annotated[float, SECONDS] = 30 * 86400
    """A serving certificate is renewed this long before it expires: 30 days."""

    ca_validity_seconds: Annotated[float, SECONDS] = 5 * 365 * 86400
    """Validity of each CA the operator makes: 5 years."""

    ca_renew_before_seconds: Annotated[float, SECONDS] = 365 * 86400
    """The CA is replaced this long (a year) before it expires; old and new are both in the CA
    bundle until no replica serves a certificate the old one signed."""

    cert_check_seconds: Annotated[float, SECONDS] = 10.0
    """How often each replica reads the Secret (and reloads a changed certificate) and the leader
    checks renewals and every injected CA bundle (repairing one changed by hand). A new CA is
    used to sign only three times this long after it joined the bundle."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cert_secret is not None:
            namespace, _, name = self.cert_secret.partition("/")
            if not namespace or not name or "/" in name:
                raise SettingsError(
                    f"webhooks.cert_secret: {self.cert_secret!r} is not <namespace>/<name>"
                )
        for what, renew, validity in (
            ("cert", self.cert_renew_before_seconds, self.cert_validity_seconds),
            ("ca", self.ca_renew_before_seconds, self.ca_validity_seconds),
        ):
            if renew >= validity:
                raise SettingsError(
                    f"webhooks.{what}_renew_before_seconds ({renew:g}) is not shorter than"
                    f" webhooks.{what}_validity_seconds ({validity:g})"
                )


@dataclass(frozen=True)
class ReconcileSettings(SettingsGroup):
    """The work queue that reconciles ConfigEntries, ConfigSchemas and FeatureFlags."""

    workers: Annotated[int, POSITIVE, Name("workers")] = 8
    """Objects reconciled at once (one object is never reconciled twice at the same time)."""

    parallel_applies: Annotated[int, POSITIVE] = 16
    """ConfigMap writes one object makes at once across its target namespaces."""

    requeue_initial_seconds: Annotated[float, SECONDS] = 0.5
    """Delay before a failed reconcile is retried; it doubles with each further failure."""

    requeue_max_seconds: Annotated[float, SECONDS] = 30.0
    """Longest delay between retries of a reconcile that keeps failing."""

    resync_seconds: Annotated[float, SECONDS] = 300.0
    """How often every ConfigEntry and FeatureFlag is reconciled again without a change: the
    safety net under the watches (each round spread over the first half of the period)."""


@dataclass(frozen=True)
class LeaderSettings(SettingsGroup):
    """More than one replica: which one reconciles what, decided by Kubernetes Leases
    (coordination.k8s.io/v1). Namespaces are divided into shards; each shard is reconciled by
    the one replica holding its Lease. ``/metrics`` serves on every replica either way, and so
    do the admission webhooks of a replica given a webhook port (in a cluster they are ``ferry
    webhooks``, which takes no Lease: decision 0035; docs/scaling.md, decision 0020)."""

    lease_namespace: str | None = None
    """Namespace of the Leases; in a cluster, the operator's own. Unset: no leader election, this
    process reconciles everything, so run a single replica."""

    shards: Annotated[int, POSITIVE] = 1
    """Shards the namespaces are divided into, by a stable hash of the namespace's name. ``1``:
    plain leader election, one active replica and the others on standby. More than one needs
    ``lease_namespace``; every replica must be given the same number."""

    lease_name_prefix: str = "ferry"
    """The Leases are named ``<prefix>-shard-<i>-of-<shards>``."""

    lease_duration_seconds: Annotated[float, SECONDS] = 15.0
    """How long the other replicas wait on a Lease that is no longer renewed before one of them
    takes the shard over (a replica that stops cleanly releases its Leases at once)."""

    renew_seconds: Annotated[float, SECONDS] = 5.0
    """How often a holder renews its Leases. A holder that could not renew for
    ``lease_duration_seconds - renew_seconds`` stops reconciling the shard, before anyone else
    may take it. At most a third of ``lease_duration_seconds``."""

    retry_seconds: Annotated[float, SECONDS] = 2.0
    """How often a replica reads the Leases it does not hold (to take over one that expired) and
    retries a failed renewal. At most ``renew_seconds``."""

    identity: str | None = None
    """This replica's name in its Leases' ``holderIdentity``. Unset: ``<hostname>_<pid>`` (in a pod,
    the pod's name: a restarted container with the same pid takes its Leases back at once)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shards > 1 and self.lease_namespace is None:
            raise SettingsError(
                f"leader.shards is {self.shards}: more than one shard needs"
                " leader.lease_namespace (the Leases decide which replica reconciles which shard)"
            )
        if self.renew_seconds * 3 > self.lease_duration_seconds:
            raise SettingsError(
                f"leader.renew_seconds ({self.renew_seconds:g}) is more than a third of"
                f" leader.lease_duration_seconds ({self.lease_duration_seconds:g})"
            )
        if self.retry_seconds > self.renew_seconds:
            raise SettingsError(
                f"leader.retry_seconds ({self.retry_seconds:g}) is longer than"
                f" leader.renew_seconds ({self.renew_seconds:g})"
            )
        if (problem := lease_name_problem(self.lease_name_prefix)) is not None:
            raise SettingsError(f"leader.lease_name_prefix: {problem}")


@dataclass(frozen=True)
class ValidationSettings(SettingsGroup):
    """The worker processes that check schemas and validate configuration, so that no input,
    however costly, stalls the operator or another namespace (docs/security.md)."""

    workers: Annotated[int, POSITIVE] = 2
    """Validation worker processes. One namespace uses at most all but one of them at once, so
    a namespace sending costly input always leaves a worker to the others."""

    timeout_seconds: Annotated[float, Range(above=0, max=3.0)] = 2.0
    """Longest one schema check or validation may run. A worker that overruns is killed and
    replaced, and the entry or schema reports ``ValidationTooCostly`` naming the schema. At
    most 3 s, so that the admission webhooks still answer within their 5 s timeout."""


@dataclass(frozen=True)
class HistorySettings(SettingsGroup):
    """How long revisions and audit rows are kept in PostgreSQL (docs/backup-and-recovery.md).
    The latest revision of an object is never pruned."""

    retain_revisions: Annotated[int | None, POSITIVE, Name("retain-revisions")] = None
    """Keep the last N revisions of each object. Unset: all."""

    retain_days: Annotated[int | None, POSITIVE, Name("retain-days")] = None
    """Keep every revision current at some moment of the last D days. Unset: all."""

    audit_retain_days: Annotated[int | None, POSITIVE, Name("audit-retain-days")] = None
    """Keep audit rows for D days. Unset: forever."""

    prune_seconds: Annotated[float, SECONDS] = 3600.0
    """How often the retention above is applied (first at start); nothing runs when all three
    are unset."""


@dataclass(frozen=True)
class FlagSettings(SettingsGroup):
    """FeatureFlag evaluation."""

    default_bucketing: Literal["flagd-v2", "flagd-v3"] = "flagd-v3"
    """Generation of flagd's ``fractional`` bucketing that percentage splits follow when a
    FeatureFlag sets no ``spec.bucketing``: ``flagd-v3`` hashes the canonical CBOR of
    ``[flagKey, targetingKey]`` (flagd's current specification), ``flagd-v2`` the text
    ``flagKey + targetingKey`` (flagd's Go core up to v0.16). Pick the one your applications'
    flagd providers run, so that they and Ferry give every user the same variant."""


@dataclass(frozen=True)
class VaultSettings(SettingsGroup):
    """Vault (or OpenBao), where the values of a ConfigEntry's ``secretData`` are read from into a
    Secret. Those values are never stored anywhere else."""

    address: str | None = None
    """Vault's URL, e.g. ``https://vault.vault:8200``. Unset: no Vault (ConfigEntries with
    ``secretData`` are refused)."""

    auth_method: Literal["token", "kubernetes"] = "kubernetes"
    """How Ferry logs in: ``kubernetes`` with its service-account token and ``role`` (Vault's
    Kubernetes auth method), or ``token`` with ``token`` as it is (development and tests)."""

    token: Annotated[str | None, ENV_ONLY] = field(default=None, repr=False)
    """Vault token for the ``token`` auth method. Environment only, never logged."""

    role: str | None = None
    """Vault role Ferry logs in as with the ``kubernetes`` auth method."""

    namespace: str | None = None
    """Vault Enterprise or OpenBao namespace to work in. Unset: the root namespace."""

    ca_file: Path | None = None
    """CA bundle that verifies Vault's TLS certificate. Unset: the system's CAs."""

    timeout_seconds: Annotated[float, SECONDS] = 10.0
    """How long one request to Vault may take before Vault counts as unavailable (entries
    report it and are retried with backoff)."""

    max_concurrency: Annotated[int, POSITIVE] = 8
    """Most reads in flight to Vault at once (logins and token renewals have a slot of their
    own); waiting reads take turns by namespace."""

    queue_timeout_seconds: Annotated[float, SECONDS] = 30.0
    """Longest a read waits for a free connection to Vault (all ``max_concurrency`` in use)
    before it fails as ``VaultBusy`` — Vault was not asked — and is retried with backoff. The
    request's own ``timeout_seconds`` starts only once it is sent."""

    mount: str = "secret"
    """Mount path of the KV version 2 secrets engine that ``secretData`` paths are read from."""

    kubernetes_mount: str = "kubernetes"
    """Mount path of Vault's Kubernetes auth method."""

    service_account_token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    """The service-account token Ferry presents to Vault's Kubernetes auth method."""

    allowed_path_prefixes: tuple[str, ...] = ()
    """Paths (inside ``mount``) that ``secretData`` may read: a path must start with one of
    these prefixes, where ``{namespace}`` stands for the ConfigEntry's namespace (e.g.
    ``tenants/{namespace}/``), so that one tenant cannot read another's secrets. Separated by
    spaces in the variable; the option may be repeated. Empty: every path is refused."""

    min_refresh_seconds: Annotated[float, SECONDS] = 60.0
    """Shortest interval at which Vault values are read again: a ConfigEntry's
    ``spec.refreshInterval`` below it counts as this, so no tenant can flood Vault."""

    default_refresh_seconds: Annotated[float, SECONDS] = 3600.0
    """How often Vault values are read again when ``spec.refreshInterval`` is not set."""

    hmac_key_file: Path | None = None
    """File holding the key of the HMAC that stands in for Vault values wherever Ferry records a
    hash of them (revisions, status, annotations), so that a recorded hash cannot be used to
    guess a value."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.default_refresh_seconds < self.min_refresh_seconds:
            raise SettingsError(
                f"vault.default_refresh_seconds ({self.default_refresh_seconds:g}) is shorter than"
                f" vault.min_refresh_seconds ({self.min_refresh_seconds:g})"
            )


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The operator's settings, built once by ``ferry run`` and read everywhere else."""

    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    database: DatabaseSettings
    cache: CacheSettings
    api: ApiSettings = field(default_factory=ApiSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    flags: FlagSettings = field(default_factory=FlagSettings)
    vault: VaultSettings = field(default_factory=VaultSettings)


@dataclass(frozen=True, kw_only=True)
class AdmissionSettings:
    """What ``ferry webhooks`` reads: the groups of :class:`Settings` the admission webhooks
    need, and neither PostgreSQL's nor Redis's, which that process never connects to."""

    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    vault: VaultSettings = field(default_factory=VaultSettings)


__all__ = [
    "AdmissionSettings",
    "ApiSettings",
    "CacheSettings",
    "DatabaseSettings",
    "FlagSettings",
    "HistorySettings",
    "KubernetesSettings",
    "LeaderSettings",
    "ReconcileSettings",
    "ServeSettings",
    "Settings",
    "SettingsError",
    "ValidationSettings",
    "VaultSettings",
    "WebhookSettings",
]
