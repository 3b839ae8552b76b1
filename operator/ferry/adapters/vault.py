"""Vault (or OpenBao): KV v2 reads with hvac, authenticated by token or Kubernetes auth.

hvac is synchronous, so every call runs on a small thread pool of this client's own. A call first
waits for a slot (``max_concurrency`` for reads, one more kept for login and renewal so reads can
never starve them; waiters of different lanes, i.e. tenants, take turns), at most
``queue_timeout`` (:class:`VaultBusy`: Vault was not asked); only then does the timeout of the
request itself start (hvac's HTTP timeout, and an outer ``asyncio.wait_for``). A hung Vault never
blocks the event loop, and a queue in this process is never reported as a slow Vault.

Authentication:

* ``TokenAuth`` (development): a fixed token; if Vault stops accepting it there is nothing to
  re-authenticate with, so reads fail with :class:`AuthenticationFailed`.
* ``KubernetesAuth`` (in a cluster): log in to Vault's Kubernetes auth method with the
  service-account token file (read at every login: kubelet rotates projected tokens). The Vault
  token is renewed (``renew_self``) once two thirds of its lease have passed; when it can no
  longer be renewed (max TTL), has expired or was revoked, the client logs in again. A 403 on a
  read is told apart from a revoked token with ``lookup_self``, so a real policy denial does not
  cause a login storm.

Errors are normalised into one tree (:class:`VaultError` and its subclasses), each with a
condition ``reason``; no hvac exception leaves this module (a 404 means "no such secret" only for
a KV read: from an auth endpoint it names the auth mount). Messages name the address, mount, path,
key and version and quote Vault's own error text, never a secret value — Vault never echoes values
in errors, and the value-bearing objects here (:class:`SecretVersion`, :class:`ResolvedValue`)
keep values out of their ``repr``.

Reads shared between entries (one per path per refresh): :mod:`ferry.adapters.vault_reads`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import hvac
import hvac.exceptions
import requests

from ferry.domain.secrets import SecretRef
from ferry.slots import FairSlots

T = TypeVar("T")
logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
#: Renew a token once this fraction of its lease has passed (Vault Agent renews at about 2/3).
RENEW_AT_FRACTION = 2 / 3
#: Log in again rather than renew when less than this is left: a renewal might not make it.
RELOGIN_MARGIN = 5.0
#: Longest Vault error text quoted in a message.
MAX_QUOTED = 300


# --- errors ------------------------------------------------------------------------------------


class VaultError(Exception):
    """Anything that went wrong talking to Vault. ``reason`` is a condition reason (CamelCase);
    ``retryable`` tells the caller whether trying again later can help without a change."""

    default_reason: ClassVar[str] = "VaultError"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, reason: str | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.path = path


class SecretNotFound(VaultError):
    """No such path, no such key in it, or the version asked for was deleted or destroyed."""

    default_reason = "SecretNotFound"

    def __init__(
        self,
        message: str,
        *,
        path: str,
        key: str | None = None,
        version: int | None = None,
        deleted: bool = False,
        destroyed: bool = False,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason, path=path)
        self.key = key
        self.version = version
        self.deleted = deleted
        self.destroyed = destroyed


class PermissionDenied(VaultError):
    """Vault refused: the token's policies do not allow the read."""

    default_reason = "VaultPermissionDenied"


class AuthenticationFailed(PermissionDenied):
    """No usable token: the login was refused, or a configured token is expired or revoked."""

    default_reason = "VaultLoginFailed"


class VaultUnavailable(VaultError):
    """Vault is down, unreachable, too slow, sealed or rate-limiting: retry with backoff."""

    default_reason = "VaultUnavailable"
    retryable = True


class VaultBusy(VaultUnavailable):
    """Not Vault's fault: every connection this client allows was in use for ``queue_timeout``,
    so the request was never sent. Retry with backoff, as for an unavailable Vault."""

    default_reason = "VaultBusy"


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAuth:
    """A fixed Vault token (development: the dev server's root token)."""

    token: str = field(repr=False)


@dataclass(frozen=True)
class KubernetesAuth:
    """Vault's Kubernetes auth method with this pod's service-account token."""

    role: str
    mount: str = "kubernetes"
    token_file: Path = SERVICE_ACCOUNT_TOKEN


@dataclass(frozen=True)
class VaultConfig:
    address: str  # e.g. https://vault.vault.svc:8200
    auth: TokenAuth | KubernetesAuth
    kv_mount: str = "secret"  # where the KV v2 engine is mounted
    timeout: float = 10.0  # seconds per HTTP request
    verify: bool | str = True  # TLS verification, or a CA bundle file
    namespace: str | None = None  # Vault Enterprise / OpenBao namespace
    max_concurrency: int = 8  # concurrent reads to Vault (login/renewal have one slot more)
    queue_timeout: float = 30.0  # longest wait for a free slot before VaultBusy


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretVersion:
    """One version of a KV v2 secret. ``data`` holds the values and stays out of ``repr``."""

    path: str
    version: int
    created_time: str
    data: Mapping[str, Any] = field(repr=False)

    def value(self, key: str) -> Any:
        if key not in self.data:
            raise SecretNotFound(
                f'key "{key}" not found in Vault secret "{self.path}" version {self.version}',
                path=self.path,
                key=key,
                version=self.version,
                reason="SecretKeyNotFound",
            )
        return self.data[key]


@dataclass(frozen=True)
class ResolvedValue:
    """A Secret key's value as the bytes the Secret holds, and the Vault version it came from."""

    ref: SecretRef
    version: int
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class Resolution:
    """Every reference of one entry: the values found and, separately, what failed."""

    values: dict[str, ResolvedValue]  # by Secret key
    failures: dict[str, VaultError]  # by Secret key

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class TokenInfo:
    accessor: str
    ttl: float | None  # seconds left when last checked; None: never expires
    renewable: bool
    expires_at: float | None  # on the client's clock; None: never


@dataclass
class VaultStats:
    reads: int = 0  # KV reads asked of Vault (whatever the answer)
    logins: int = 0
    renewals: int = 0


class SecretReader(Protocol):
    async def read(
        self, path: str, version: int | None = None, *, lane: str | None = None
    ) -> SecretVersion: ...


# --- the client --------------------------------------------------------------------------------


@dataclass
class _Token:
    value: str = field(repr=False)
    accessor: str
    lease: float  # seconds granted at login/renewal (0: no expiry)
    renewable: bool
    obtained_at: float

    @property
    def expires_at(self) -> float | None:
        return self.obtained_at + self.lease if self.lease > 0 else None


@dataclass(frozen=True)
class _Pool:
    """Slots for requests to Vault (:class:`~ferry.slots.FairSlots`: waiters queue per lane, a
    tenant — the namespace whose entry asked — and lanes take turns, so a lane with a thousand
    waiters delays another lane's next request by one turn, not a thousand), with what a
    message says of them."""

    slots: FairSlots
    size: int
    kind: str

    @classmethod
    def of(cls, size: int, kind: str) -> _Pool:
        return cls(FairSlots(size, per_tenant=size), size, kind)


class VaultClient:
    """Async facade over a synchronous hvac client. One per operator process."""

    def __init__(self, config: VaultConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.stats = VaultStats()
        self._clock = clock
        # One thread per slot: a request that has its slot never waits for a thread, so its
        # timeout measures Vault alone. A slot is given back when its thread is done, not when
        # its caller stops waiting: a timed-out request still holds a connection to Vault.
        self._read_slots = _Pool.of(config.max_concurrency, "reads (vault.max_concurrency)")
        self._auth_slots = _Pool.of(1, "login and renewal")  # never behind a queue of reads
        self._executor = ThreadPoolExecutor(
            max_workers=config.max_concurrency + 1, thread_name_prefix="ferry-vault"
        )
        # token="" rather than None: hvac would otherwise fall back to $VAULT_TOKEN/~/.vault-token
        self._hvac = hvac.Client(
            url=config.address,
            token="",
            timeout=config.timeout,
            verify=config.verify,
            namespace=config.namespace,
        )
        self._token: _Token | None = None
        self._auth_lock = asyncio.Lock()

    # -- lifecycle

    async def __aenter__(self) -> VaultClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._hvac.adapter.close()

    # -- public API

    async def login(self) -> TokenInfo:
        """Authenticate now (also checks a configured token is valid)."""
        async with self._auth_lock:
            await self._login()
            return self._info()

    async def token_info(self) -> TokenInfo:
        """The current token as the client sees it (logging in first if needed)."""
        await self._ensure_token()
        return self._info()

    async def renew(self) -> TokenInfo:
        """Renew the token now (``renew_self``), or log in again if it cannot be renewed."""
        async with self._auth_lock:
            if self._token is None:
                await self._login()
            else:
                await self._renew_or_login()
            return self._info()

    async def read(
        self, path: str, version: int | None = None, *, lane: str | None = None
    ) -> SecretVersion:
        """Read one version (``None``: the latest) of the KV v2 secret at ``path``. ``lane``:
        whose read this is (a namespace), for fair turns when reads have to wait.

        Raises :class:`SecretNotFound` (no such path/version, or it was deleted or destroyed),
        :class:`PermissionDenied`, :class:`AuthenticationFailed` or :class:`VaultUnavailable`.
        """
        mount = self.config.kv_mount
        what = f'reading "{path}"' + (f" version {version}" if version is not None else "")
        what += f' from KV v2 mount "{mount}"'

        def call() -> Mapping[str, Any]:
            kv = self._hvac.secrets.kv.v2
            return kv.read_secret_version(  # type: ignore[no-any-return]
                path=path, version=version, mount_point=mount, raise_on_deleted_version=True
            )

        def not_found(exc: hvac.exceptions.InvalidPath) -> VaultError:
            return self._not_found(exc, path, version)

        self.stats.reads += 1
        response = await self._authenticated(call, what=what, lane=lane, not_found=not_found)
        body = response.get("data") or {}
        metadata = body.get("metadata") or {}
        data = body.get("data")
        if not isinstance(data, Mapping):  # a deleted version answered with 200 by some servers
            raise SecretNotFound(
                f'version {metadata.get("version", version)} of Vault secret "{path}" has no data '
                "(deleted or destroyed)",
                path=path,
                version=version,
                deleted=True,
                reason="SecretVersionDeleted",
            )
        return SecretVersion(
            path=path,
            version=int(metadata.get("version") or version or 0),
            created_time=str(metadata.get("created_time", "")),
            data=data,
        )

    # -- internals: authentication

    def _info(self) -> TokenInfo:
        token = self._token
        assert token is not None
        expires = token.expires_at
        ttl = None if expires is None else max(0.0, expires - self._clock())
        return TokenInfo(token.accessor, ttl, token.renewable, expires)

    def _can_login_again(self) -> bool:
        return isinstance(self.config.auth, KubernetesAuth)

    async def _ensure_token(self) -> None:
        token = self._token
        if token is not None and not self._renewal_due(token):
            return
        async with self._auth_lock:
            token = self._token  # another task may have done it while we waited
            if token is None:
                await self._login()
            elif self._renewal_due(token):
                await self._renew_or_login()

    def _renewal_due(self, token: _Token) -> bool:
        if token.lease <= 0:
            return False
        return self._clock() >= token.obtained_at + token.lease * RENEW_AT_FRACTION

    async def _renew_or_login(self) -> None:
        token = self._token
        assert token is not None
        left = (token.expires_at or math.inf) - self._clock()
        if token.renewable and left > RELOGIN_MARGIN:
            try:
                await self._renew()
                return
            except VaultUnavailable:
                raise
            except VaultError:
                if not self._can_login_again():
                    raise
        if self._can_login_again():
            await self._login()
        elif left <= 0:
            raise AuthenticationFailed(
                f"the configured Vault token has expired (Vault at {self.config.address}); "
                "configure a new one"
            )

    async def _renew(self) -> None:
        token = self._token
        assert token is not None
        increment = int(token.lease) if token.lease > 0 else None
        started = self._clock()
        response = await self._run(
            functools.partial(self._hvac.auth.token.renew_self, increment=increment),
            what="renewing the Vault token",
            auth=True,
        )
        auth = response.get("auth") or {}
        lease = float(auth.get("lease_duration") or 0)
        if token.lease > 0 and lease < min(token.lease, RELOGIN_MARGIN * 2):
            # Capped by the token's max TTL: treat as not renewable so the next check logs in.
            self._token = _Token(token.value, token.accessor, lease, False, started)
        else:
            self._token = _Token(
                token.value, token.accessor, lease, bool(auth.get("renewable")), started
            )
        self.stats.renewals += 1
        logger.info("renewed the Vault token (lease %ss)", int(lease))

    async def _login(self) -> None:
        auth = self.config.auth
        started = self._clock()
        if isinstance(auth, TokenAuth):
            self._hvac.token = auth.token
            try:
                response = await self._run(
                    self._hvac.auth.token.lookup_self, what="checking the Vault token", auth=True
                )
            except PermissionDenied:
                raise AuthenticationFailed(
                    f"Vault at {self.config.address} does not accept the configured token "
                    "(expired, revoked or wrong, or it lacks Vault's default policy, which "
                    "lets a token look itself up)"
                ) from None
            data = response.get("data") or {}
            self._token = _Token(
                auth.token,
                str(data.get("accessor", "")),
                float(data.get("ttl") or 0),
                bool(data.get("renewable")),
                started,
            )
            self.stats.logins += 1
            return
        try:
            jwt = (await asyncio.to_thread(auth.token_file.read_text)).strip()
        except OSError as exc:
            raise AuthenticationFailed(
                f"cannot read the service-account token {auth.token_file}: {exc.strerror or exc}"
            ) from None
        login = functools.partial(
            self._hvac.auth.kubernetes.login,
            role=auth.role,
            jwt=jwt,
            mount_point=auth.mount,
            use_token=False,
        )
        what = (
            f'logging in to Vault with Kubernetes auth (mount "{auth.mount}", role "{auth.role}")'
        )

        def no_such_mount(exc: hvac.exceptions.InvalidPath) -> VaultError:
            # A 404 here is about the auth mount, never about a secret (reads would otherwise
            # report it as a missing KV mount and stall entries with the wrong cause).
            return AuthenticationFailed(
                f'Vault at {self.config.address} has no auth method at mount "{auth.mount}" '
                f'(logging in with Kubernetes auth, role "{auth.role}"): {_vault_said(exc)}'
            )

        try:
            response = await self._run(login, what=what, auth=True, not_found=no_such_mount)
        except VaultUnavailable:
            raise
        except VaultError as exc:
            raise AuthenticationFailed(exc.message) from None
        data = response.get("auth") or {}
        value = str(data.get("client_token", ""))
        self._hvac.token = value
        self._token = _Token(
            value,
            str(data.get("accessor", "")),
            float(data.get("lease_duration") or 0),
            bool(data.get("renewable")),
            started,
        )
        self.stats.logins += 1
        logger.info(
            "logged in to Vault at %s (Kubernetes auth, mount %s, role %s; lease %ss)",
            self.config.address,
            auth.mount,
            auth.role,
            int(self._token.lease),
        )

    async def _authenticated(
        self,
        call: Callable[[], T],
        *,
        what: str,
        lane: str | None = None,
        not_found: Callable[[hvac.exceptions.InvalidPath], VaultError] | None = None,
    ) -> T:
        """``call`` with a valid token; on a 403 caused by a dead token, log in once and retry."""
        await self._ensure_token()
        token = self._token
        try:
            return await self._run(call, what=what, lane=lane, not_found=not_found)
        except PermissionDenied:
            if await self._token_still_valid(token, lane):
                raise  # a real policy denial
            async with self._auth_lock:
                if self._token is token:  # nobody replaced it meanwhile
                    if not self._can_login_again():
                        raise AuthenticationFailed(
                            f"Vault at {self.config.address} no longer accepts the configured "
                            "token (expired or revoked); configure a new one"
                        ) from None
                    await self._login()
            return await self._run(call, what=what, lane=lane, not_found=not_found)

    async def _token_still_valid(self, token: _Token | None, lane: str | None) -> bool:
        if token is None or token is not self._token:
            return False
        try:  # part of the read that was denied: its lane, not the reserved slot
            lookup = self._hvac.auth.token.lookup_self
            await self._run(lookup, what="checking the Vault token", lane=lane)
        except PermissionDenied:
            return False
        return True

    # -- internals: running hvac and normalising its errors

    async def _run(
        self,
        call: Callable[[], T],
        *,
        what: str,
        lane: str | None = None,
        auth: bool = False,
        not_found: Callable[[hvac.exceptions.InvalidPath], VaultError] | None = None,
    ) -> T:
        """``call`` on a thread once a slot is free (``auth``: the slot kept for login and
        renewal), its errors normalised. ``not_found`` says what a 404 means for this request;
        without it a 404 is an invalid request, never a missing secret."""
        slots = self._auth_slots if auth else self._read_slots
        running = await self._start(call, slots, lane=lane, what=what)
        limit = self.config.timeout * 2 + 1  # connect + read timeouts of hvac, plus slack
        try:  # timed from the start of the call: the wait for a slot is not Vault's slowness
            return await asyncio.wait_for(asyncio.wrap_future(running), timeout=limit)
        except hvac.exceptions.InvalidPath as exc:
            failure = not_found(exc) if not_found is not None else self._normalise(exc, what)
            raise failure from None
        except Exception as exc:
            raise self._normalise(exc, what) from None

    async def _start(
        self, call: Callable[[], T], pool: _Pool, *, lane: str | None, what: str
    ) -> Future[T]:
        """Wait (bounded) for a slot, then run ``call`` on a thread that is free by design."""
        tenant = lane or ""
        try:
            await pool.slots.acquire(tenant, self.config.queue_timeout)
        except TimeoutError:
            raise VaultBusy(
                f"no request to Vault at {self.config.address} could start within "
                f"{self.config.queue_timeout:g}s ({what}): all {pool.size} connections this "
                f"operator allows for {pool.kind} were in use; Vault was not asked"
            ) from None
        loop = asyncio.get_running_loop()
        try:
            running = self._executor.submit(call)
        except RuntimeError:  # shut down: close() was called
            pool.slots.release(tenant)
            raise VaultError(f"the Vault client was closed ({what})") from None
        release = functools.partial(pool.slots.release, tenant)
        running.add_done_callback(lambda _: _call_soon(loop, release))
        return running

    def _normalise(self, exc: BaseException, what: str) -> VaultError:
        where = f"Vault at {self.config.address}"
        if isinstance(exc, TimeoutError | requests.Timeout):
            return VaultUnavailable(
                f"{where} did not answer within {self.config.timeout:g}s ({what})",
                reason="VaultTimeout",
            )
        if isinstance(exc, requests.ConnectionError):
            return VaultUnavailable(f"{where} is unreachable ({what}): {_connection_cause(exc)}")
        if isinstance(exc, hvac.exceptions.VaultError):
            said = _vault_said(exc)
            if isinstance(exc, hvac.exceptions.InvalidPath):  # a 404 from a non-KV endpoint
                return VaultError(
                    f"{where} has no endpoint for {what}: {said}", reason="VaultRequestInvalid"
                )
            if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
                return PermissionDenied(f"{where} denied {what}: {said}")
            if isinstance(exc, hvac.exceptions.VaultDown):
                sealed = "sealed" in said.lower()
                return VaultUnavailable(
                    f"{where} is {'sealed' if sealed else 'unavailable'} ({what}): {said}",
                    reason="VaultSealed" if sealed else None,
                )
            if isinstance(
                exc,
                hvac.exceptions.RateLimitExceeded
                | hvac.exceptions.InternalServerError
                | hvac.exceptions.BadGateway
                | hvac.exceptions.VaultNotInitialized,
            ):
                return VaultUnavailable(f"{where} failed {what}: {said}")
            return VaultError(f"{where} refused {what}: {said}", reason="VaultRequestInvalid")
        if isinstance(exc, VaultError):
            return exc
        if isinstance(exc, OSError):
            return VaultError(f"{what}: {exc.strerror or type(exc).__name__}")
        return VaultError(f"unexpected error {what} ({where}): {type(exc).__name__}")

    def _not_found(
        self, exc: hvac.exceptions.InvalidPath, path: str, version: int | None
    ) -> SecretNotFound:
        mount = self.config.kv_mount
        body = exc.json if isinstance(exc.json, Mapping) else {}
        metadata = (body.get("data") or {}).get("metadata") or {}
        found_version = metadata.get("version")
        label = f"version {found_version}" if found_version else "the latest version"
        if version is not None:
            label = f"version {version}"
        if metadata.get("destroyed"):
            return SecretNotFound(
                f'{label} of Vault secret "{path}" (mount "{mount}") was destroyed',
                path=path,
                version=found_version or version,
                destroyed=True,
                reason="SecretVersionDestroyed",
            )
        if metadata.get("deletion_time"):
            return SecretNotFound(
                f'{label} of Vault secret "{path}" (mount "{mount}") was deleted',
                path=path,
                version=found_version or version,
                deleted=True,
                reason="SecretVersionDeleted",
            )
        said = _vault_said(exc)
        if "no handler for route" in said:
            return SecretNotFound(
                f'Vault at {self.config.address} has no secrets engine mounted at "{mount}"',
                path=path,
                reason="VaultMountNotFound",
            )
        if version is not None:
            return SecretNotFound(
                f'Vault has no version {version} of secret "{path}" (mount "{mount}")',
                path=path,
                version=version,
            )
        return SecretNotFound(f'Vault has no secret at "{path}" (mount "{mount}")', path=path)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Run ``callback`` on ``loop`` from a worker thread; nothing to do once the loop is gone."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def _vault_said(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own error text (the ``errors`` list), short; never the response body."""
    errors = [str(e) for e in (exc.errors or []) if e]
    text = "; ".join(" ".join(e.split()) for e in errors) or f"HTTP error ({type(exc).__name__})"
    return text[:MAX_QUOTED]


def _connection_cause(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for cause in ("Connection refused", "Name or service not known", "certificate verify failed"):
        if cause in text:
            return cause.lower()
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    return text[:MAX_QUOTED]
