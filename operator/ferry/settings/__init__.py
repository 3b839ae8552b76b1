"""Every setting of the operator, in one place: grouped frozen dataclasses, a docstring per field.

This module is the single source of each setting's name, type, default and meaning. From it,
:mod:`ferry.settings.options` derives ``ferry run``'s options and ``FERRY_*`` environment
variables, and :mod:`ferry.settings.docs` the table in docs/configuration.md (a unit test fails
when the two differ). To add a setting, add a field with a docstring below; nothing else.

Naming: a field ``reconcile.resync_seconds`` is the option ``--reconcile-resync-seconds`` and the
variable ``FERRY_RECONCILE_RESYNC_SECONDS``. Names in use before the settings were grouped keep
working unchanged; they are marked with :class:`Name` (``--workers``, ``FERRY_REDIS_URL``, …).
Durations are seconds, as floats, and every name that holds one ends in ``_seconds``.

``Annotated`` carries what the command line and the docs need besides the type:
:class:`Range` (inclusive bounds, checked here and by the command line), :class:`Name` and
:data:`ENV_ONLY` (a credential: read from the environment only, since any user of a machine can
read another process's arguments). Credentials and URLs that may embed one are left out of
``repr``, so a logged ``Settings`` never shows them.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal


@dataclass(frozen=True)
class Range:
    """Bounds of a number (inclusive; ``above`` is exclusive, for durations that must be > 0)."""

    min: float | None = None
    max: float | None = None
    above: float | None = None


@dataclass(frozen=True)
class Name:
    """A name in use before the settings were grouped: ``--{option}`` and ``env``
    (default ``FERRY_`` + the option in upper case)."""

    option: str
    env: str | None = None


@dataclass(frozen=True)
class _EnvOnly:
    """A credential: taken from the environment variable only, never from an option."""


ENV_ONLY = _EnvOnly()
PORT = Range(min=1, max=65535)
POSITIVE = Range(min=1)
SECONDS = Range(above=0)


class SettingsError(ValueError):
    """A setting's value is out of range or of the wrong type; the message names the setting."""


class _Group:
    """Checks a group's values against its field types when it is built, wherever it is built."""

    #: Start of the option and variable names (default: the group's name in :class:`Settings`).
    option_prefix: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        for item in fields(self):  # type: ignore[arg-type]
            check(type(self), item.name, getattr(self, item.name))


@dataclass(frozen=True)
class KubernetesSettings(_Group):
    """The Kubernetes API server whose ConfigSchemas, ConfigEntries and FeatureFlags Ferry
    serves."""

    kubeconfig: Annotated[str | None, Name("kubeconfig", env="KUBECONFIG")] = None
    """Kubeconfig file of the cluster. Unset: the pod's service account inside a cluster,
    otherwise ``~/.kube/config``."""

    watch_timeout_seconds: Annotated[float, SECONDS] = 300.0
    """How long the API server keeps each watch open before Ferry starts a new one (Kopf's
    ``watching.server_timeout``). Ferry lists again only if the watch cannot resume."""


@dataclass(frozen=True)
class DatabaseSettings(_Group):
    """PostgreSQL, where revisions and the audit log are recorded. Migrations are applied at start
    under an advisory lock, so several replicas may start at once."""

    url: str = field(repr=False)
    """libpq connection URI, e.g. ``postgresql://ferry@db.ferry-system:5432/ferry``. PostgreSQL
    down: entries turn ``Recorded=False`` and nothing new is written until it is back."""

    pool_max_size: Annotated[int, POSITIVE] = 10
    """Most connections open to PostgreSQL at once; the reconcile workers share them."""


@dataclass(frozen=True)
class CacheSettings(_Group):
    """Redis, the cache behind the read API and the change feed (channel ``ferry:changes``).
    Only a cache: Redis being down never blocks ConfigMaps, entries report ``Cached=False``."""

    url: Annotated[str, Name("redis-url")] = field(repr=False)
    """Redis URL, e.g. ``redis://redis.ferry-system:6379/0`` (``rediss://`` for TLS)."""

    timeout_seconds: Annotated[float, SECONDS] = 2.0
    """How long connecting to Redis or one command may take before it counts as down."""


@dataclass(frozen=True)
class ApiSettings(_Group):
    """The HTTP read API: ``/v1/configs``, flag evaluation, ``/metrics``, ``/healthz``,
    ``/readyz``."""

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` to serve other hosts, as in a pod)."""

    port: Annotated[int, PORT] = 8080
    """Port to listen on."""


@dataclass(frozen=True)
class WebhookSettings(_Group):
    """The HTTPS server of the admission webhooks that validate every write (webhooks/README.md)."""

    option_prefix = "webhook"

    host: str = "127.0.0.1"
    """Address to listen on; a generated serving certificate is issued for it."""

    port: Annotated[int | None, PORT] = None
    """Port of the admission webhooks. Unset: no webhooks are served (and nothing is validated
    at admission)."""

    cert_dir: Annotated[Path | None, Name("webhook-dir")] = None
    """Directory of the serving certificate: ``tls.crt``, ``tls.key`` and ``ca.crt`` found there
    (a mounted Secret, e.g. from cert-manager) are used as they are; otherwise Ferry generates a CA
    and a certificate there and registers the webhooks itself. Unset: a temporary directory."""

    client_ca_file: Path | None = None
    """CA bundle that verifies the client certificate the API server presents to the webhooks;
    a request without a certificate it signed is refused. Unset: no client certificate is
    asked for."""


@dataclass(frozen=True)
class ReconcileSettings(_Group):
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
    safety net under the watches."""


@dataclass(frozen=True)
class HistorySettings(_Group):
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
class FlagSettings(_Group):
    """FeatureFlag evaluation."""

    default_bucketing: Literal["flagd-v2", "flagd-v3"] = "flagd-v3"
    """Generation of flagd's ``fractional`` bucketing that percentage splits follow when a
    FeatureFlag sets no ``spec.bucketing``: ``flagd-v3`` hashes the canonical CBOR of
    ``[flagKey, targetingKey]`` (flagd's current specification), ``flagd-v2`` the text
    ``flagKey + targetingKey`` (flagd's Go core up to v0.16). Pick the one your applications'
    flagd providers run, so that they and Ferry give every user the same variant."""


@dataclass(frozen=True)
class VaultSettings(_Group):
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
    """Most requests in flight to Vault at once."""

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
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    flags: FlagSettings = field(default_factory=FlagSettings)
    vault: VaultSettings = field(default_factory=VaultSettings)


# ------------------------------------------------------------------------------ type checking


@cache
def hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types with their ``Annotated`` extras (resolved once per class)."""
    return typing.get_type_hints(cls, include_extras=True)


def unpack(hint: Any) -> tuple[Any, bool, tuple[Any, ...]]:
    """``Annotated[X | None, extras…]`` → ``(X, True, extras)``."""
    extras: tuple[Any, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *rest = typing.get_args(hint)
        extras = tuple(rest)
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        (hint,) = members
    return hint, optional, extras


def check(cls: type, name: str, value: Any) -> None:
    """Raise :class:`SettingsError` unless ``value`` fits the type and range of ``cls.name``."""
    base, optional, extras = unpack(hints(cls)[name])
    where = f"{cls.__name__}.{name}"
    if value is None:
        if not optional:
            raise SettingsError(f"{where} must be set")
        return
    if typing.get_origin(base) is Literal:
        if value not in typing.get_args(base):
            allowed = ", ".join(repr(choice) for choice in typing.get_args(base))
            raise SettingsError(f"{where} is {value!r}; it must be one of {allowed}")
        return
    if typing.get_origin(base) is tuple:
        (item,) = {arg for arg in typing.get_args(base) if arg is not Ellipsis}
        if not (isinstance(value, tuple) and all(isinstance(v, item) for v in value)):
            raise SettingsError(f"{where} must be a tuple of {item.__name__}, not {value!r}")
        return
    accepted: tuple[type, ...] = (int, float) if base is float else (base,)
    if not isinstance(value, accepted) or (base is not bool and isinstance(value, bool)):
        raise SettingsError(f"{where} must be a {base.__name__}, not {value!r}")
    for bounds in (extra for extra in extras if isinstance(extra, Range)):
        if bounds.min is not None and value < bounds.min:
            raise SettingsError(f"{where} is {value}; it must be at least {bounds.min:g}")
        if bounds.max is not None and value > bounds.max:
            raise SettingsError(f"{where} is {value}; it must be at most {bounds.max:g}")
        if bounds.above is not None and value <= bounds.above:
            raise SettingsError(f"{where} is {value}; it must be more than {bounds.above:g}")


__all__ = [
    "ApiSettings",
    "CacheSettings",
    "DatabaseSettings",
    "FlagSettings",
    "HistorySettings",
    "KubernetesSettings",
    "ReconcileSettings",
    "Settings",
    "SettingsError",
    "VaultSettings",
    "WebhookSettings",
]
