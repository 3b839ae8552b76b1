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

What one caller can cost: a token that is not printable ASCII is refused without a review; a
refused token is cached as its message only (never as an exception object, whose traceback
would keep every request that raised it alive); a user's access answers are a bounded share of
the cache, evicted least recently used, so asking about many objects cannot push other users'
answers out; and with a :class:`ReviewBudget` a user may cause only so many uncached
SubjectAccessReviews a second.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
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


class TooManyReviews(Exception):
    """The user has spent its :class:`ReviewBudget`: ``retry_after`` seconds until it may ask
    about an object again (objects it asked about recently are still answered from the cache)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Refusal:
    """A token the API server did not accept, as cached: its message, from which each caller
    gets an :class:`Unauthenticated` of its own. (One cached exception object, raised again and
    again, gathered every raiser's frames in its traceback, and with them every request.)"""

    message: str


#: A bearer token is visible ASCII (RFC 6750's ``b64token`` is narrower). Anything else was
#: not issued by the API server, and could not even be put in a TokenReview (UnicodeEncodeError).
_TOKEN = re.compile(r"[\x21-\x7e]+")


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
    """A bounded map whose entries expire, and whose misses for one key are computed once.

    When full, the least recently used entry goes. With ``owner`` (the owner of a key) and
    ``max_per_owner``, an owner past its share loses its own least recently used entry instead,
    so one owner asking many questions cannot push the others' answers out. Expired entries
    are dropped as new ones come in, not only when their key is asked for again.
    """

    #: Insertions between passes over every entry for expired ones (at least; see ``_sweep``).
    SWEEP_EVERY = 16

    def __init__(
        self,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        owner: Callable[[Hashable], Hashable] | None = None,
        max_per_owner: int | None = None,
    ) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[V]] = {}
        self._max = max_entries
        self._clock = clock
        self._owner = owner
        self._max_per_owner = max(1, max_per_owner) if max_per_owner is not None else None
        self._owned: dict[Hashable, OrderedDict[Hashable, None]] = {}  # owner → its keys, LRU
        self._since_sweep = 0
        self._sweep_every = self.SWEEP_EVERY

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        if self._owner is not None:
            self._owned[self._owner(key)].move_to_end(key)
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
            self._store(key, value, keep)
        return value, False

    def _store(self, key: Hashable, value: V, keep: float) -> None:
        now = self._clock()
        self._sweep(now)
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (now + keep, value)
        if self._owner is not None:
            keys = self._owned.setdefault(self._owner(key), OrderedDict())
            keys[key] = None
            while self._max_per_owner is not None and len(keys) > self._max_per_owner:
                self._remove(next(iter(keys)))
        while len(self._entries) > self._max:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: Hashable) -> None:
        del self._entries[key]
        if self._owner is None:
            return
        owner = self._owner(key)
        keys = self._owned[owner]
        del keys[key]
        if not keys:
            del self._owned[owner]

    def _sweep(self, now: float) -> None:
        """Drop expired entries before adding one. The least recently used come first, where
        expired ones gather (all live for the same TTL or less), until a live one; and every so
        many insertions (as many as there were entries at the last pass) all of them, for those
        that expired behind a live one. Either way O(1) per insertion, amortised."""
        while self._entries:
            key, (expiry, _) = next(iter(self._entries.items()))
            if expiry > now:
                break
            self._remove(key)
        self._since_sweep += 1
        if self._since_sweep < self._sweep_every:
            return
        for key in [k for k, (expiry, _) in self._entries.items() if expiry <= now]:
            self._remove(key)
        self._since_sweep = 0
        self._sweep_every = max(self.SWEEP_EVERY, len(self._entries))


class ReviewBudget:
    """How many uncached SubjectAccessReviews each user may cause: ``burst`` at once, then
    ``per_second`` (a token bucket per user name, for at most ``max_users`` users, the least
    recently seen forgotten first).

    Every object a user has not asked about lately costs a review (and, for a configuration
    that does not exist, a PostgreSQL read). Without a budget, one tenant asking for random
    names in its own namespace made ``ferry serve`` spend the API server's and PostgreSQL's time
    on it, and everyone else waited. What was asked about recently is answered from the cache
    and costs nothing here.
    """

    def __init__(
        self,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 10_000,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._max_users = max_users
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # (tokens, when)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, user: str) -> float | None:
        """None if ``user`` may cause one more review now (it is counted); otherwise the seconds
        until it may."""
        now = self._clock()
        tokens, when = self._buckets.pop(user, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.per_second)
        wait = None
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.per_second
        self._buckets[user] = (tokens, now)
        while len(self._buckets) > self._max_users:
            self._buckets.popitem(last=False)
        return wait


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


def _asker(key: Hashable) -> Hashable:
    """Whose question a decision answers: the user of a ``(user, access)`` key."""
    return key[0] if isinstance(key, tuple) else key


class KubeAuth:
    """TokenReview and SubjectAccessReview with their caches.

    ``max_entries_per_user``: the share of the decision cache one user's answers may hold
    (default a tenth). ``review_budget``: uncached SubjectAccessReviews per user (default: no
    limit; ``ferry serve`` sets one)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        audience: str | None,
        ttl_seconds: float,
        max_entries: int = 10_000,
        max_entries_per_user: int | None = None,
        review_budget: ReviewBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._audience = audience
        self._ttl = ttl_seconds
        self._wall = wall_clock
        self._budget = review_budget
        share = max_entries_per_user if max_entries_per_user is not None else max_entries // 10
        self.tokens: TTLCache[User | Refusal] = TTLCache(max_entries, clock)
        self.decisions: TTLCache[Decision] = TTLCache(
            max_entries, clock, owner=_asker, max_per_owner=share
        )

    async def close(self) -> None:
        await self._client.close()

    async def authenticate(self, token: str) -> tuple[User, bool]:
        """The user ``token`` belongs to (and whether the answer was cached); raises
        :class:`Unauthenticated` or :class:`AuthUnavailable`."""
        if not _TOKEN.fullmatch(token):
            raise Unauthenticated("the token was not accepted: it is not printable ASCII")
        key = hashlib.sha256(token.encode("ascii")).digest()

        async def review() -> tuple[User | Refusal, float]:
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
                return Refusal(f"the token was not accepted: {error}"), self._ttl
            if self._audience and self._audience not in (status.audiences or ()):
                # An authenticator that ignores audiences: refuse rather than trust it.
                return Refusal(f"the token is not for the audience {self._audience!r}"), self._ttl
            keep = self._ttl
            if (expiry := token_expiry(token)) is not None:
                keep = min(keep, expiry - self._wall())
            return _user(status.user), keep

        result, cached = await self.tokens.get(key, review)
        if isinstance(result, Refusal):
            raise Unauthenticated(result.message)  # a new one each time: see Refusal
        return result, cached

    async def authorize(self, user: User, access: Access) -> tuple[Decision, bool]:
        """RBAC's answer for ``user`` and ``access`` (and whether it was cached); raises
        :class:`AuthUnavailable`, or :class:`TooManyReviews` when the answer is not cached and
        the user's budget is spent."""
        key = (user, access)

        async def review() -> tuple[Decision, float]:
            self._spend(user)
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

    def _spend(self, user: User) -> None:
        if self._budget is None or (wait := self._budget.take(user.username)) is None:
            return
        raise TooManyReviews(
            f"too many access checks for {user.username}: RBAC is asked about at most "
            f"{self._budget.burst} objects at once, then {self._budget.per_second:g} a second, "
            f"for objects not asked about in the last {self._ttl:g} s; retry after "
            f"{math.ceil(wait)} s",
            wait,
        )


def make_client(kubeconfig: str | None, *, timeout_seconds: float = 5.0) -> AsyncClient:
    """The server's own client for reviews: ``kubeconfig``, or in a pod its service account."""
    return kube_client.make_client(kubeconfig, timeout_seconds=timeout_seconds)
