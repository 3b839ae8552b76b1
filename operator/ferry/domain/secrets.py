"""Values from Vault: what ``spec.secretData`` may name, and what Ferry records about them.

Pure functions only (no I/O); ``ferry.adapters.vault`` reads Vault, the reconciler composes both.

The rules that keep a secret a secret live here:

* a reference is parsed into a :class:`SecretRef` or refused with JSON-path violations, and is
  checked against the Vault path prefixes the entry's *namespace* is allowed to name (the
  ``ferry.dev/vault-paths`` annotation set by the platform team, plus the operator's setting), so
  tenant A cannot make Ferry copy tenant B's secrets into A's namespace;
* revisions record a :class:`SecretRecord` — path, key, Vault version and an HMAC-SHA256 of the
  value under a key only the operator holds — never the value. The HMAC input includes the
  entry's namespace, name and Secret key, so equal values in two places do not produce equal
  records (not linkable), while a rotation always shows as a change;
* the refresh schedule spreads entries over their interval by a hash of their uid, so 10,000
  entries never read Vault in the same second, also right after an operator restart.

See docs/decisions/0015-secrets-from-vault.md.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.domain.errors import Invalid, Violation, field_path
from ferry.domain.hashing import canonical_json

#: Most keys one entry's ``secretData`` may have (also ``maxProperties`` in the CRD).
MAX_SECRET_KEYS = 64
#: Longest Vault path and key (also ``maxLength`` in the CRD).
MAX_PATH_LENGTH = 512
MAX_VAULT_KEY_LENGTH = 256
#: A Secret data key, as Kubernetes validates it.
MAX_SECRET_KEY_LENGTH = 253
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
#: What `envFrom` accepts as a variable name without surprises (POSIX-style identifiers).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: One segment of a Vault path: a conservative set that never needs URL escaping.
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.@=+:,~-]+")

DEFAULT_REFRESH_SECONDS = 3600.0
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

HMAC_PREFIX = "hmac-sha256:"
#: Shortest operator HMAC key accepted (bytes): as long as the SHA-256 output.
MIN_HMAC_KEY_BYTES = 32


@dataclass(frozen=True, order=True)
class VaultRef:
    """Where one value lives: a secret at ``path`` in the KV v2 mount, one ``key`` of its data,
    at a pinned ``version`` or (``None``) the latest."""

    path: str
    key: str
    version: int | None = None

    def describe(self) -> str:
        at = f" version {self.version}" if self.version is not None else ""
        return f'Vault path "{self.path}" key "{self.key}"{at}'


@dataclass(frozen=True, order=True)
class SecretRef:
    """One key of the generated Secret (``name``) and where its value comes from."""

    name: str
    vault: VaultRef

    @property
    def field(self) -> str:
        """The JSON path of this reference in the entry, for violations and conditions."""
        return field_path("spec.secretData", [self.name])


# --- parsing ---------------------------------------------------------------------------------


def parse_secret_data(
    secret_data: object, *, env_names: bool = False, path: str = "spec.secretData"
) -> tuple[SecretRef, ...]:
    """Parse ``spec.secretData`` (``{key: {vault: {path, key, version?}}}``) into refs sorted by
    Secret key, or raise :class:`Invalid` (reason ``InvalidSecretData``) listing every violation.

    ``None`` or ``{}`` is "no secrets". ``env_names`` (format ``env``) also requires keys to be
    environment variable names, since ``envFrom`` is how such a Secret is consumed.
    """
    refs, violations = _parse(secret_data, env_names=env_names, prefix=path)
    if violations:
        raise Invalid("InvalidSecretData", violations)
    return refs


def secret_data_violations(
    secret_data: object, *, env_names: bool = False, path: str = "spec.secretData"
) -> list[Violation]:
    """The violations :func:`parse_secret_data` would raise; never raises (for the webhook)."""
    return _parse(secret_data, env_names=env_names, prefix=path)[1]


def _parse(
    secret_data: object, *, env_names: bool, prefix: str
) -> tuple[tuple[SecretRef, ...], list[Violation]]:
    if secret_data is None:
        return (), []
    if not isinstance(secret_data, Mapping):
        return (), [Violation(prefix, "must be an object mapping Secret keys to Vault references")]
    violations: list[Violation] = []
    if len(secret_data) > MAX_SECRET_KEYS:
        violations.append(
            Violation(prefix, f"has {len(secret_data)} keys; at most {MAX_SECRET_KEYS} are allowed")
        )
    refs: list[SecretRef] = []
    for name in sorted(secret_data, key=str):
        here = field_path(prefix, [str(name)])
        violations += _secret_key_violations(here, name, env_names=env_names)
        ref, found = _parse_one(here, secret_data[name])
        violations += found
        if ref is not None and isinstance(name, str):
            refs.append(SecretRef(name, ref))
    return tuple(refs), violations


def _secret_key_violations(here: str, name: object, *, env_names: bool) -> list[Violation]:
    if not isinstance(name, str) or not name:
        return [Violation(here, "a Secret key must be a non-empty string")]
    if len(name) > MAX_SECRET_KEY_LENGTH or not _SECRET_KEY.fullmatch(name):
        return [
            Violation(
                here,
                f"{name[:80]!r} is not a valid Secret key (letters, digits, '-', '_' and '.', "
                f"at most {MAX_SECRET_KEY_LENGTH} characters)",
            )
        ]
    if env_names and not _ENV_NAME.fullmatch(name):
        return [
            Violation(
                here,
                f"{name!r} is not an environment variable name, which format env needs "
                "(letters, digits and '_', not starting with a digit)",
            )
        ]
    return []


def _parse_one(here: str, value: object) -> tuple[VaultRef | None, list[Violation]]:
    if not isinstance(value, Mapping):
        return None, [Violation(here, "must be an object like {vault: {path, key}}")]
    violations = [
        Violation(field_path(here, [str(k)]), "unknown field (only vault is allowed)")
        for k in value
        if k != "vault"
    ]
    vault = value.get("vault")
    vault_path = field_path(here, ["vault"])
    if not isinstance(vault, Mapping):
        return None, [*violations, Violation(vault_path, "is required: an object {path, key}")]
    violations += [
        Violation(field_path(vault_path, [str(k)]), "unknown field (allowed: path, key, version)")
        for k in vault
        if k not in ("path", "key", "version")
    ]
    secret_path = vault.get("path")
    violations += _path_violations(field_path(vault_path, ["path"]), secret_path)
    key = vault.get("key")
    key_field = field_path(vault_path, ["key"])
    if not isinstance(key, str) or not key:
        violations.append(Violation(key_field, "is required: the key inside the Vault secret"))
    elif len(key) > MAX_VAULT_KEY_LENGTH:
        violations.append(Violation(key_field, f"is longer than {MAX_VAULT_KEY_LENGTH} characters"))
    version = vault.get("version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        violations.append(
            Violation(
                field_path(vault_path, ["version"]),
                f"{version!r} is not a Vault secret version (an integer >= 1; omit for latest)",
            )
        )
    if violations:
        return None, violations
    assert isinstance(secret_path, str) and isinstance(key, str)
    return VaultRef(secret_path, key, version), []


def _path_violations(here: str, value: object) -> list[Violation]:
    if not isinstance(value, str) or not value:
        return [Violation(here, "is required: the secret's path inside the KV v2 mount")]
    if len(value) > MAX_PATH_LENGTH:
        return [Violation(here, f"is longer than {MAX_PATH_LENGTH} characters")]
    segments = value.split("/")
    if (
        any(s in ("", ".", "..") for s in segments)
        or not all(_PATH_SEGMENT.fullmatch(s) for s in segments)
        or value.startswith("/")
    ):
        return [
            Violation(
                here,
                f"{value[:80]!r} is not a Vault path: '/'-separated segments of letters, digits "
                "and _ . @ = + : , ~ -, without empty, '.' or '..' segments or a leading '/' "
                "(the path is inside the KV v2 mount, without the mount or 'data/')",
            )
        ]
    return []


# --- which paths a namespace may name -----------------------------------------------------------


def parse_prefixes(text: str | None) -> tuple[str, ...]:
    """Prefixes from a comma-separated list (the namespace annotation or the operator setting).

    Whitespace and slashes around each are ignored; empty items are dropped.
    """
    if not text:
        return ()
    items = (item.strip().strip("/") for item in text.split(","))
    return tuple(sorted({item for item in items if item}))


def allowed_prefixes(
    namespace: str,
    annotation: str | None,
    operator_prefixes: Iterable[str] = (),
) -> tuple[str, ...]:
    """The Vault path prefixes entries in ``namespace`` may name.

    The union of the namespace's ``ferry.dev/vault-paths`` annotation and the operator's
    setting, where ``{namespace}`` in an operator prefix stands for the namespace (so one setting
    such as ``tenants/{namespace}`` gives every namespace a private subtree).
    """
    found = set(parse_prefixes(annotation))
    for prefix in operator_prefixes:
        found.update(parse_prefixes(prefix.replace("{namespace}", namespace)))
    return tuple(sorted(found))


def path_allowed(path: str, prefixes: Iterable[str]) -> bool:
    """True if ``path`` is one of ``prefixes`` or below one, segment by segment:
    ``team-a`` allows ``team-a/db`` but not ``team-ab/db``."""
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def path_violations(
    refs: Iterable[SecretRef], namespace: str, prefixes: Sequence[str]
) -> list[Violation]:
    """One violation per reference outside ``prefixes``, naming what *is* allowed."""
    if prefixes:
        allowed = ", ".join(f'"{p}"' for p in prefixes[:10])
        allowed += f" and {len(prefixes) - 10} more" if len(prefixes) > 10 else ""
        cause = f"namespace {namespace} may only name Vault paths under {allowed}"
    else:
        cause = (
            f"namespace {namespace} may not name any Vault path (the platform team allows "
            f"paths with the namespace annotation ferry.dev/vault-paths)"
        )
    return [
        Violation(
            field_path(ref.field, ["vault", "path"]),
            f'"{ref.vault.path}" is not allowed: {cause}',
        )
        for ref in refs
        if not path_allowed(ref.vault.path, prefixes)
    ]


def env_key_collisions(refs: Iterable[SecretRef], config_keys: Iterable[str]) -> list[Violation]:
    """Secret keys that are also keys of the entry's ConfigMap: with ``envFrom`` listing both,
    one would silently hide the other, so such an entry is refused."""
    taken = set(config_keys)
    return [
        Violation(ref.field, f"{ref.name!r} is also a key of the ConfigMap (from spec.data)")
        for ref in refs
        if ref.name in taken
    ]


# --- what revisions record -------------------------------------------------------------------


def secret_bytes(value: object) -> bytes:
    """The bytes a Vault value becomes in the Secret: a string as UTF-8, anything else (numbers,
    booleans, objects) as canonical JSON. One spelling, so the Secret and its HMAC agree."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return canonical_json(value).encode("utf-8", "surrogatepass")


def check_hmac_key(key: bytes) -> None:
    """Refuse a key too short to keep recorded HMACs from being brute-forced."""
    if len(key) < MIN_HMAC_KEY_BYTES:
        raise ValueError(
            f"the secret HMAC key has {len(key)} bytes; at least {MIN_HMAC_KEY_BYTES} are needed"
        )


def secret_hmac(key: bytes, *, namespace: str, entry: str, name: str, value: bytes) -> str:
    """``hmac-sha256:<hex>`` of one resolved value, bound to where it is used.

    Keyed (a value cannot be guessed from its record by hashing candidates without the key) and
    bound to namespace, entry and Secret key, so the same password in two namespaces gives two
    unrelated records. The fields are length-prefixed by JSON so no two inputs collide.
    """
    check_hmac_key(key)
    context = canonical_json(["ferry.secret.v1", namespace, entry, name]).encode()
    digest = hmac.new(key, context + b"\x00" + value, hashlib.sha256).hexdigest()
    return HMAC_PREFIX + digest


@dataclass(frozen=True, order=True)
class SecretRecord:
    """What a revision records for one Secret key: the reference, the version read and an HMAC of
    the value. Safe to store, log and show: it holds no value."""

    name: str
    path: str
    key: str
    version: int
    hmac: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "key": self.key,
            "version": self.version,
            "hmac": self.hmac,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecretRecord:
        return cls(
            name=str(data["name"]),
            path=str(data["path"]),
            key=str(data["key"]),
            version=int(data["version"]),
            hmac=str(data["hmac"]),
        )


def record_secret(
    ref: SecretRef, *, version: int, value: object, key: bytes, namespace: str, entry: str
) -> SecretRecord:
    """The record of ``ref`` resolved to ``value`` at Vault ``version``."""
    digest = secret_hmac(
        key, namespace=namespace, entry=entry, name=ref.name, value=secret_bytes(value)
    )
    return SecretRecord(ref.name, ref.vault.path, ref.vault.key, version, digest)


def records_json(records: Iterable[SecretRecord]) -> list[dict[str, Any]]:
    """Records in a fixed order (by Secret key), ready for a revision or a content hash."""
    return [r.to_json() for r in sorted(records)]


def describe_secret_changes(
    before: Iterable[SecretRecord | Mapping[str, Any]],
    after: Iterable[SecretRecord | Mapping[str, Any]],
) -> list[str]:
    """Lines for history, diff and rollback, one per changed Secret key, sorted by key, e.g.
    ``DB_PASSWORD: secret value changed (version 3 → 4)``. Never a value: only records."""
    old = {r.name: r for r in map(_record, before)}
    new = {r.name: r for r in map(_record, after)}
    lines: list[str] = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a is None and b is not None:
            lines.append(
                f'{name}: secret added (Vault "{b.path}" key "{b.key}", version {b.version})'
            )
        elif b is None and a is not None:
            lines.append(f'{name}: secret removed (was Vault "{a.path}" key "{a.key}")')
        elif a is not None and b is not None and a != b:
            lines.append(f"{name}: {_describe_change(a, b)}")
    return lines


def _describe_change(a: SecretRecord, b: SecretRecord) -> str:
    if (a.path, a.key) != (b.path, b.key):
        value = "value changed" if a.hmac != b.hmac else "same value"
        return (
            f'secret now from Vault "{b.path}" key "{b.key}" version {b.version} '
            f'(was "{a.path}" key "{a.key}" version {a.version}; {value})'
        )
    if a.hmac != b.hmac:
        if a.version != b.version:
            return f"secret value changed (version {a.version} → {b.version})"
        return f"secret value changed (version {b.version})"
    return f"secret version {a.version} → {b.version}, value unchanged"


def _record(item: SecretRecord | Mapping[str, Any]) -> SecretRecord:
    return item if isinstance(item, SecretRecord) else SecretRecord.from_json(item)


# --- when to read Vault again ----------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration as the CRD allows (``1h``, ``90m``, ``1h30m``, ``2.5s``,
    ``500ms``); raises ``ValueError`` for anything else."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not a duration like 1h, 30m or 1h30m")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not a duration like 1h, 30m or 1h30m")
    return total


def refresh_interval_violations(value: object, *, minimum: float) -> list[Violation]:
    """What is wrong with ``spec.refreshInterval`` (absent is fine: the default applies)."""
    if value is None:
        return []
    here = "spec.refreshInterval"
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except ValueError as exc:
        return [Violation(here, str(exc))]
    if seconds < minimum:
        return [
            Violation(
                here,
                f"{value} is shorter than the minimum of {_format_seconds(minimum)} "
                "this operator allows (a setting)",
            )
        ]
    return []


def refresh_interval(
    value: object, *, default: float = DEFAULT_REFRESH_SECONDS, minimum: float
) -> float:
    """Seconds between reads for an entry: its ``spec.refreshInterval``, or ``default``, never
    below ``minimum`` (an entry stored while the webhook was off is clamped, not refused)."""
    try:
        seconds = parse_duration(value) if value is not None else default  # type: ignore[arg-type]
    except ValueError:
        seconds = default
    return max(seconds, minimum)


def refresh_phase(uid: str, interval: float) -> float:
    """Where in each interval an entry refreshes: a uniform position derived from its uid."""
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


def next_refresh(uid: str, interval: float, now: float) -> float:
    """The first refresh time strictly after ``now`` (same clock as ``now``).

    Refreshes of an entry fall on ``phase + k * interval`` with the phase a hash of its uid:
    entries are spread evenly over the interval (jitter), each keeps its slot across operator
    restarts (no stampede at start-up), and consecutive refreshes are exactly ``interval`` apart.
    """
    if not (interval > 0 and math.isfinite(interval)):
        raise ValueError(f"refresh interval must be a positive number of seconds, not {interval}")
    phase = refresh_phase(uid, interval)
    k = math.floor((now - phase) / interval) + 1
    due = phase + k * interval
    while due <= now:  # float rounding
        due += interval
    return due


def _format_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
