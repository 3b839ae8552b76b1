"""Who is calling, and may they: Kubernetes' TokenReview and SubjectAccessReview, cached.

``ferry serve`` keeps no users of its own. A caller presents a bearer token (a pod's projected
service-account token, bound to Ferry's audience); the API server says whose it is
(TokenReview, with ``spec.audiences``), and RBAC says what they may read (SubjectAccessReview:
``get`` on ``configentries`` or ``featureflags`` of group ``ferry.dev`` in a namespace). The
server's own identity needs only ``create`` on ``tokenreviews`` and ``subjectaccessreviews``
(the ``system:auth-delegator`` ClusterRole has exactly that).

Both answers are cached for a short TTL (as kube-apiserver's own webhook authenticator and
authorizer do), so a warm request costs two dict lookups. The cache is bounded, keyed by a hash
of the token (a token is never kept, logged or put in an error), and concurrent identical
questions share one review. What the TTL means: a revoked RoleBinding or a deleted service
account still works for at most that long on each replica; a token is never trusted past its
own ``exp``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx2 as httpx
from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview

from ferry.adapters import kube_client
from ferry.domain import kinds

V = TypeVar("V")

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


class AuthUnavailable(Exception):
    """The API server could not answer a review (down, or Ferry lacks the RBAC to ask)."""


class Unauthenticated(Exception):
    """The token is not valid for Ferry's audience (expired, forged, revoked, other audience)."""


@dataclass(frozen=True)
class User:
    """A caller as the API server vouched for them (TokenReview ``status.user``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def service_account_namespace(self) -> str | None:
        """``ns`` for ``system:serviceaccount:ns:name``; None for any other user."""
        if not self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, sep, _ = self.username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
        return namespace if sep and namespace else None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class Access:
    """One question for RBAC: may the user ``verb`` ``resource`` (group ferry.dev unless
    ``group`` says otherwise) in ``namespace`` ("": all namespaces) (and, when set, the object
    ``name``)?"""

    verb: str
    resource: str
    namespace: str
    name: str | None = None
    group: str = kinds.GROUP
    """Another API group's resources: the history API's own (``history.ferry.dev``)."""

    def describe(self) -> str:
        what = f"{self.resource}.{self.group}" + (f' "{self.name}"' if self.name else "")
        where = f"in namespace {self.namespace}" if self.namespace else "in all namespaces"
        return f"{self.verb} {what} {where}"


class TTLCache(Generic[V]):
    """A bounded map whose entries expire, and whose misses for one key are computed once."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[V]] = {}
        self._max = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._entries[key]
            return None
        return found[1]

    async def get(
        self, key: Hashable, compute: Callable[[], Awaitable[tuple[V, float]]]
    ) -> tuple[V, bool]:
        """The cached value (and True), or ``compute()``'s (value, seconds to keep it) and False.
        An exception from ``compute`` is not cached: the next caller asks again."""
        cached = self.peek(key)
        if cached is not None:
            return cached, True
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending), False
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value, keep = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(value)
        if keep > 0:
            self._entries[key] = (self._clock() + keep, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value, False


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (seconds since the epoch), read without verifying anything:
    used only to keep a verified token's cache entry no longer than the token itself lives."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _user(info: Any) -> User:
    extra = info.extra or {}
    return User(
        username=str(info.username or ""),
        uid=str(info.uid or ""),
        groups=tuple(info.groups or ()),
        extra=tuple(sorted((str(k), tuple(v or ())) for k, v in extra.items())),
    )


def _unavailable(what: str, exc: Exception) -> AuthUnavailable:
    if isinstance(exc, ApiError):
        return AuthUnavailable(f"{what}: the API server answered {exc.status.code}: {exc}")
    return AuthUnavailable(f"{what}: {type(exc).__name__}: {exc}")


class KubeAuth:
    """TokenReview and SubjectAccessReview with their caches."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        audience: str | None,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._audience = audience
        self._ttl = ttl_seconds
        self._wall = wall_clock
        self.tokens: TTLCache[User | Unauthenticated] = TTLCache(max_entries, clock)
        self.decisions: TTLCache[Decision] = TTLCache(max_entries, clock)

    async def close(self) -> None:
        await self._client.close()

    async def authenticate(self, token: str) -> tuple[User, bool]:
        """The user ``token`` belongs to (and whether the answer was cached); raises
        :class:`Unauthenticated` or :class:`AuthUnavailable`."""
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

        async def review() -> tuple[User | Unauthenticated, float]:
            spec = TokenReviewSpec(
                token=token, audiences=[self._audience] if self._audience else None
            )
            try:
                answer = await self._client.create(TokenReview(spec=spec))
            except (ApiError, httpx.HTTPError) as exc:
                raise _unavailable("TokenReview", exc) from None
            status = answer.status
            if status is None or not status.authenticated or status.user is None:
                error = (status.error if status is not None else None) or "not authenticated"
                return Unauthenticated(f"the token was not accepted: {error}"), self._ttl
            if self._audience and self._audience not in (status.audiences or ()):
                # An authenticator that ignores audiences: refuse rather than trust it.
                return Unauthenticated(f"the token is not for the audience {self._audience!r}"), (
                    self._ttl
                )
            keep = self._ttl
            if (expiry := token_expiry(token)) is not None:
                keep = min(keep, expiry - self._wall())
            return _user(status.user), keep

        result, cached = await self.tokens.get(key, review)
        if isinstance(result, Unauthenticated):
            raise result
        return result, cached

    async def authorize(self, user: User, access: Access) -> tuple[Decision, bool]:
        """RBAC's answer for ``user`` and ``access`` (and whether it was cached); raises
        :class:`AuthUnavailable`."""
        key = (user, access)

        async def review() -> tuple[Decision, float]:
            spec = SubjectAccessReviewSpec(
                user=user.username,
                uid=user.uid or None,
                groups=list(user.groups) or None,
                extra={k: list(v) for k, v in user.extra} or None,
                resourceAttributes=ResourceAttributes(
                    group=access.group,
                    resource=access.resource,
                    verb=access.verb,
                    namespace=access.namespace,
                    name=access.name,
                ),
            )
            try:
                answer = await self._client.create(SubjectAccessReview(spec=spec))
            except (ApiError, httpx.HTTPError) as exc:
                raise _unavailable("SubjectAccessReview", exc) from None
            status = answer.status
            allowed = bool(status is not None and status.allowed)
            reason = (status.reason or status.evaluationError or "") if status else ""
            return Decision(allowed, reason), self._ttl

        return await self.decisions.get(key, review)


def make_client(kubeconfig: str | None, *, timeout_seconds: float = 5.0) -> AsyncClient:
    """The server's own client for reviews: ``kubeconfig``, or in a pod its service account."""
    return kube_client.make_client(kubeconfig, timeout_seconds=timeout_seconds)
