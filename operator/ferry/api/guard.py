"""Whom ``ferry serve`` answers: a bearer token Kubernetes vouches for, and RBAC that says yes.

Every data route calls :meth:`Guard.require` before reading anything, so a refused caller learns
nothing about what exists (a 403 is the same whether the object exists or not). Refusals are
Kubernetes ``Status`` objects that say why, e.g. ``401 Unauthorized: no bearer token`` or
``403 Forbidden: system:serviceaccount:shop:web may not get configentries.ferry.dev "db" in
namespace payments``; a token never appears in a response or a log line.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from aiohttp import web

from ferry.adapters.kube_auth import (
    Access,
    AuthUnavailable,
    KubeAuth,
    TooManyReviews,
    Unauthenticated,
    User,
)
from ferry.api import metrics
from ferry.domain.status import status_body

logger = logging.getLogger(__name__)


def status_response(
    code: int, message: str, *, retry_after: float | None = None, **details: Any
) -> web.Response:
    """A Kubernetes ``Status``; ``retry_after`` seconds (a 503 says 1 unless told) become
    ``Retry-After``, rounded up."""
    response = web.json_response(status_body(code, message, **details), status=code)
    if code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ferry"'
    if retry_after is None and code == 503:
        retry_after = 1
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


class Refused(Exception):
    """Raised by the guard; the handler returns :attr:`response` as it is."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Guard:
    def __init__(self, auth: KubeAuth, audience: str | None) -> None:
        self.auth = auth
        self.audience = audience

    async def user(self, request: web.Request) -> User:
        """The authenticated caller, or :class:`Refused` with 401 (or 503 if Kubernetes cannot
        be asked)."""
        token = bearer_token(request)
        if token is None:
            metrics.child(metrics.AUTH, "token", "missing").inc()
            audience = f" for the audience {self.audience!r}" if self.audience else ""
            raise Refused(
                status_response(
                    401,
                    "no bearer token: send 'Authorization: Bearer <token>' with a "
                    f"service-account token{audience}",
                )
            )
        try:
            user, cached = await self.auth.authenticate(token)
        except Unauthenticated as exc:
            metrics.child(metrics.AUTH, "token", "refused").inc()
            raise Refused(status_response(401, str(exc))) from None
        except AuthUnavailable as exc:
            metrics.child(metrics.AUTH, "token", "unavailable").inc()
            logger.warning("cannot verify a token: %s", exc)
            raise Refused(
                status_response(503, "cannot verify credentials now: TokenReview failed")
            ) from None
        metrics.child(metrics.AUTH, "token", "cached" if cached else "reviewed").inc()
        return user

    async def allowed(self, user: User, access: Access) -> bool:
        """RBAC's answer (:class:`Refused` with 503 if it cannot be asked, 429 if the user has
        asked about too many objects lately)."""
        try:
            decision, cached = await self.auth.authorize(user, access)
        except TooManyReviews as exc:
            metrics.child(metrics.AUTH, "access", "throttled").inc()
            raise Refused(status_response(429, str(exc), retry_after=exc.retry_after)) from None
        except AuthUnavailable as exc:
            metrics.child(metrics.AUTH, "access", "unavailable").inc()
            logger.warning("cannot check access: %s", exc)
            raise Refused(
                status_response(503, "cannot check access now: SubjectAccessReview failed")
            ) from None
        metrics.child(metrics.AUTH, "access", "cached" if cached else "reviewed").inc()
        return decision.allowed

    async def require(self, request: web.Request, access: Access, user: User | None = None) -> User:
        """The caller, if RBAC lets them do ``access``; otherwise :class:`Refused` (401/403)."""
        user = user or await self.user(request)
        if not await self.allowed(user, access):
            raise Refused(forbidden(user, access))
        return user


def forbidden(user: User, access: Access) -> web.Response:
    return status_response(
        403,
        f"{user.username} may not {access.describe()}",
        group="ferry.dev",
        kind=access.resource,
        name=access.name or "",
    )
