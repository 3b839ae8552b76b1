"""Values from Vault for the entry reconciler: resolve, record, render a Secret, schedule rotation.

What is kept where (docs/secrets.md, docs/decisions/0015-secrets-from-vault.md):

* values live only in Vault, in the Secrets Ferry writes, and in memory for the length of one
  reconcile — and, so entries refreshing together share one read, the values of the keys in use
  in :class:`PathReads` for at most ``vault.min_refresh_seconds`` (bounded in count and size);
  never in logs, Events, status, Redis, PostgreSQL or metric labels;
* revisions and status carry :class:`SecretRecord`\\ s (reference, Vault version, HMAC);
* the Secret's ``ferry.dev/rendered-hash`` is an HMAC of its data, so drift is seen without a
  plain hash of a secret anywhere; the Secret index computes the same HMAC from what it sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry import metrics
from ferry.adapters.vault import (
    KubernetesAuth,
    Resolution,
    TokenAuth,
    VaultClient,
    VaultConfig,
)
from ferry.adapters.vault_reads import PathReads
from ferry.domain import labels as L
from ferry.domain.hashing import canonical_json
from ferry.domain.secrets import (
    SecretRecord,
    SecretRef,
    allowed_prefixes,
    check_hmac_key,
    next_refresh,
    record_secret,
    refresh_interval,
    secret_hmac,
)
from ferry.settings import VaultSettings


def secret_digest(key: bytes, namespace: str, name: str, data: Mapping[str, bytes]) -> str:
    """The keyed hash of a whole Secret's data, bound to where it lives (its rendered hash).

    Any bytes: the Secrets hashed are also those the index meets, which anyone who can label a
    Secret as Ferry's may fill with bytes that are not UTF-8. ``surrogateescape`` decodes each
    such byte to a stand-in that encodes back to the very byte, so the document is the data's
    own bytes in canonical JSON — the same digest as a strict decoding wherever that succeeds
    (every Secret Ferry writes), and never an error."""
    document = canonical_json({k: v.decode("utf-8", "surrogateescape") for k, v in data.items()})
    value = document.encode("utf-8", "surrogateescape")
    return secret_hmac(key, namespace=namespace, entry=name, name="", value=value)


@dataclass
class VaultSecrets:
    """Everything the entry reconciler asks of Vault, behind one object."""

    client: VaultClient
    hmac_key: bytes = field(repr=False)
    operator_prefixes: tuple[str, ...] = ()
    min_refresh: float = 60.0
    default_refresh: float = 3600.0
    on_rotation: Callable[[str], None] | None = None
    """Told each path whose latest version changed, when any entry's read finds it (the
    entry reconciler then re-renders every entry using that path, from that same read)."""
    reads: PathReads = field(init=False)

    def __post_init__(self) -> None:
        check_hmac_key(self.hmac_key)
        # Entries refreshing within ``min_refresh`` of each other share one read per path, and
        # a path read by a thousand entries costs one request per refresh.
        self.reads = PathReads(
            self.client,
            max_age=self.min_refresh,
            on_read=metrics.VAULT_READS.inc,
            on_new_version=self._new_version,
        )

    def _new_version(self, path: str) -> None:
        if self.on_rotation is not None:
            self.on_rotation(path)

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> VaultSecrets | None:
        """None when no Vault is configured (entries with ``secretData`` are then refused)."""
        if not settings.address:
            return None
        auth: TokenAuth | KubernetesAuth
        if settings.auth_method == "token":
            auth = TokenAuth(settings.token or "")
        else:
            auth = KubernetesAuth(
                settings.role or "", settings.kubernetes_mount, settings.service_account_token_file
            )
        config = VaultConfig(
            address=settings.address,
            auth=auth,
            kv_mount=settings.mount,
            timeout=settings.timeout_seconds,
            verify=str(settings.ca_file) if settings.ca_file else True,
            namespace=settings.namespace,
            max_concurrency=settings.max_concurrency,
            queue_timeout=settings.queue_timeout_seconds,
        )
        if settings.hmac_key_file is None:
            raise ValueError("vault.hmac_key_file is required when vault.address is set")
        return cls(
            VaultClient(config),
            Path(settings.hmac_key_file).read_bytes().strip(),
            tuple(settings.allowed_path_prefixes),
            settings.min_refresh_seconds,
            settings.default_refresh_seconds,
        )

    async def close(self) -> None:
        await self.client.close()

    def prefixes(self, namespace: str, annotations: Mapping[str, str]) -> tuple[str, ...]:
        """The Vault path prefixes entries in ``namespace`` may name."""
        return allowed_prefixes(namespace, annotations.get(L.VAULT_PATHS), self.operator_prefixes)

    async def resolve(
        self, refs: Iterable[SecretRef], *, namespace: str, fresh_since: float | None = None
    ) -> Resolution:
        """Every value of one entry of ``namespace``. ``fresh_since`` (``time.monotonic()``): a
        refresh was asked for then, so only reads started since will do; one such read serves
        every entry that asked before it started (a burst of refreshes on one path costs a few
        reads, not one per entry). When reads have to wait for a connection to Vault, namespaces
        take turns: one tenant's many entries cannot make another's reads time out."""
        resolution = await self.reads.resolve(refs, not_before=fresh_since, lane=namespace)
        for error in resolution.failures.values():  # reasons are a fixed set: bounded labels
            metrics.VAULT_FAILURES.labels(error.reason or type(error).__name__).inc()
        return resolution

    def records(self, resolution: Resolution, namespace: str, entry: str) -> list[SecretRecord]:
        return [
            record_secret(
                v.ref,
                version=v.version,
                value=v.value.decode("utf-8", "surrogatepass"),
                key=self.hmac_key,
                namespace=namespace,
                entry=entry,
            )
            for v in resolution.values.values()
        ]

    def digest(self, namespace: str, name: str, data: Mapping[str, bytes]) -> str:
        return secret_digest(self.hmac_key, namespace, name, data)

    def refresh_delay(self, uid: str, spec: Mapping[str, Any]) -> float:
        """Seconds until this entry reads Vault again (its interval, spread by its uid)."""
        interval = refresh_interval(
            spec.get("refreshInterval"), minimum=self.min_refresh, default=self.default_refresh
        )
        now = time.time()
        return max(1.0, next_refresh(uid, interval, now) - now)
