"""The HTTPS endpoint the API server calls, on aiohttp.

Each AdmissionReview is answered by :class:`ferry.webhooks.handlers.Admission` (any callable of
the same signature: :data:`Answer`); this module decides who may send one and what reaches it at
all. It runs on the admission thread's loop (:mod:`ferry.webhooks.thread`):

* **Trust.** With a client CA (``Settings.webhook_client_ca``) the TLS handshake requires a client
  certificate signed by that CA, as kube-apiserver presents with an ``AdmissionConfiguration``
  (``kubeConfigFile``): anything else is refused before a byte of HTTP is read. The context is
  built by :func:`ferry.tls.server_context`, which never loads the system's trust store.
* **Bounded reads.** Bodies above :data:`MAX_BODY_BYTES` get ``413``, whether announced by
  ``Content-Length`` or streamed chunked (aiohttp's ``client_max_size`` counts what it reads).
* **Answers, not errors.** Anything that fails while decoding or dispatching an AdmissionReview
  (JSON nested past Python's recursion limit, an unexpected exception) becomes a *denial* naming
  the object: with ``failurePolicy: Fail`` an error refuses too, but the user would only read
  "failed calling webhook". A request that is not an AdmissionReview for the path's kind gets
  ``400`` and never reaches the handlers.
* **Renewal.** Certificate files are re-read when they change (cert-manager renews a mounted
  Secret in place; with ``webhooks.cert_secret``, :func:`ferry.reconcile.certificates.follow`
  writes them from the Secret); the new listener starts before the old one stops, so no request
  is dropped. Files that are missing (not written yet) or do not load are waited for; a
  renewal that does not load leaves the previous certificate served.
* **Metrics.** Each answer is counted by kind, operation, result and a reason code from the
  fixed set :data:`ferry.domain.denials.REASONS` (never a name or a message), and timed.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import hashlib
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
from cryptography import x509
from prometheus_client import Counter, Histogram

from ferry import metrics
from ferry.domain import kinds
from ferry.domain.admission import NESTED_TOO_DEEPLY, denial_message, identity
from ferry.domain.denials import ALLOWED, reason_of
from ferry.domain.errors import Violation
from ferry.tls import ServingCertificate, server_context
from ferry.webhooks.configurations import HOOKS, Hook

logger = logging.getLogger(__name__)

#: The largest AdmissionReview read. kube-apiserver refuses request bodies over 3 MiB and etcd
#: (by default) objects over 1.5 MiB, so an UPDATE of the largest storable object carries two
#: objects of at most 1.5 MiB plus a few KiB of envelope; 4 MiB leaves room for that and for the
#: 3 MiB object of a create that etcd will refuse later (the webhook still names what is wrong).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Denials carry 403 Forbidden, as the API server's own admission plugins and policy engines do:
#: kubectl then prints ``Error from server (Forbidden): … denied the request: <message>``.
DENIED_CODE = 403
#: How often mounted certificate files are checked for renewal (Kopf's own interval).
FILE_CHECK_SECONDS = 60.0

#: The buckets of :data:`ADMISSION_SECONDS`, in seconds (``bench/noop_webhook.py`` times the
#: no-op webhooks with the same, to compare the two).
ADMISSION_BUCKETS = tuple(
    ms / 1000 for ms in (0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 500, 2500)
)
#: Time from reading a request to having its answer, inside the operator: the API server's
#: ``apiserver_admission_webhook_admission_duration_seconds`` adds TLS, network and queueing, and
#: its buckets (5 ms, 25 ms, ...) are too coarse for a budget of a few milliseconds.
ADMISSION_SECONDS = Histogram(
    "ferry_admission_duration_seconds",
    "Time the operator spends answering one admission request",
    ["webhook", "allowed"],
    buckets=ADMISSION_BUCKETS,
)

ADMISSIONS = Counter(
    "ferry_admission_requests_total",
    "Admission requests answered, by kind, operation, result (allowed, denied, error) and reason"
    " (a fixed set of codes, ferry.domain.denials.REASONS)",
    ["kind", "operation", "result", "reason"],
)
_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})

#: What answers a review: ``answer(review, webhook=<path>, sslpeer=..., headers=...)`` returns
#: the AdmissionReview response.
Answer = Callable[..., Awaitable[Mapping[str, Any]]]
#: Where the API server reaches the server: ``url`` and the PEM ``caBundle``, base64-encoded.
ClientConfig = dict[str, str]


@dataclass
class _Outcome:
    """What one request's answer is counted under; filled in while it is answered."""

    operation: str = "UNKNOWN"
    reason: str | None = None


_OUTCOME: contextvars.ContextVar[_Outcome | None] = contextvars.ContextVar(
    "ferry_admission_outcome", default=None
)


def note_denial(violations: Sequence[Violation]) -> None:
    """Called by the handler that refuses a request: the reason code its answer is counted
    under."""
    outcome = _OUTCOME.get()
    if outcome is not None and outcome.reason is None:
        outcome.reason = reason_of(violations)


_UID = re.compile(rb'"uid"\s*:\s*"([^"\\]{1,128})"')
_API_VERSION = re.compile(rb'"apiVersion"\s*:\s*"(admission\.k8s\.io/v1(?:beta1)?)"')
_HEAD_FIELDS = {
    "kind": re.compile(rb'"kind"\s*:\s*\{[^{}]*"kind"\s*:\s*"([A-Za-z0-9]{1,63})"'),
    "name": re.compile(rb'"name"\s*:\s*"([^"\\]{1,253})"'),
    "namespace": re.compile(rb'"namespace"\s*:\s*"([^"\\]{1,63})"'),
}


def denial(uid: str, message: str, api_version: str = "admission.k8s.io/v1") -> dict[str, Any]:
    """An AdmissionReview response refusing the request with ``message``."""
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {"code": DENIED_CODE, "reason": "Forbidden", "message": message},
        },
    }


def _is_review_for(review: Any, hook: Hook) -> bool:
    """What the handlers need, checked before they see the request: a uid, the hook's resource,
    the user, and an object."""
    part = review.get("request") if isinstance(review, dict) else None
    if not isinstance(part, dict) or not isinstance(part.get("uid"), str):
        return False
    resource = part.get("resource")
    wanted = {"group": kinds.GROUP, "version": kinds.VERSION, "resource": hook.kind.plural}
    return (
        isinstance(resource, dict)
        and all(resource.get(key) == value for key, value in wanted.items())
        and isinstance(part.get("userInfo"), dict)
        and isinstance(part.get("object") or part.get("oldObject"), dict)
    )


class WebhookServer:
    """Serves Ferry's webhook paths over HTTPS; see the module docstring.

    ``register`` says whether Ferry writes the webhook configurations itself (generated
    certificate) or the installation does (mounted certificate). :meth:`client_configs` yields
    the URL and CA bundle, once at start and again on renewal, on the loop of ``owner`` (the
    loop that registers the configurations; the server itself may run on another thread's).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        certificate: ServingCertificate,
        client_ca: Path | None = None,
        file_check_seconds: float = FILE_CHECK_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.certificate = certificate
        self.client_ca = client_ca
        self.register = certificate.generated
        self.file_check_seconds = file_check_seconds
        self.owner: asyncio.AbstractEventLoop | None = None
        self._configs: asyncio.Queue[ClientConfig] = asyncio.Queue()

    async def __call__(self, fn: Answer) -> AsyncIterator[ClientConfig]:
        app = aiohttp.web.Application(client_max_size=MAX_BODY_BYTES)
        for hook in HOOKS:
            app.router.add_post(f"/{hook.path}", functools.partial(self._serve, fn, hook))
        runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        previous: aiohttp.web.TCPSite | None = None
        waiting = False
        try:
            while True:
                try:
                    digest = self._digest()
                    context = server_context(
                        self.certificate.cert, self.certificate.key, self.client_ca
                    )
                except (OSError, ssl.SSLError) as error:
                    if previous is not None:
                        logger.warning("renewed webhook certificate not usable (%s): still"
                                       " serving the previous one", error)  # fmt: skip
                    elif not waiting:
                        logger.info("waiting for the webhook certificate files: %s", error)
                    waiting = True
                    await asyncio.sleep(self.file_check_seconds)
                    continue
                site = aiohttp.web.TCPSite(
                    runner,
                    self.host,
                    self.port,
                    ssl_context=context,
                    reuse_address=True,
                    reuse_port=True,  # the renewed listener binds before the old one closes
                )
                await site.start()
                if previous is not None:
                    await previous.stop()
                previous = site
                served = x509.load_pem_x509_certificate(self.certificate.cert.read_bytes())
                metrics.WEBHOOK_CERT_EXPIRY.set(served.not_valid_after_utc.timestamp())
                config = {
                    "url": f"https://{self._netloc()}",
                    "caBundle": base64.b64encode(self.certificate.ca.read_bytes()).decode(),
                }
                logger.info(
                    "admission webhooks served at %s (%s)",
                    config["url"],
                    "client certificate required" if self.client_ca else "no client certificate",
                )
                self._announce(config)
                yield config
                while self._unchanged(digest):
                    await asyncio.sleep(self.file_check_seconds)
                logger.info("webhook certificate files changed: serving the new ones")
        finally:
            await runner.cleanup()

    async def client_configs(self) -> AsyncIterator[ClientConfig]:
        """Every client config served, the first one as soon as the server listens (call it on
        the ``owner`` loop)."""
        while True:
            yield await self._configs.get()

    def _announce(self, config: ClientConfig) -> None:
        owner = self.owner
        if owner is None or owner is asyncio.get_running_loop():
            self._configs.put_nowait(config)
        else:  # asyncio queues are not thread-safe: the owner's loop puts it there
            owner.call_soon_threadsafe(self._configs.put_nowait, config)

    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _unchanged(self, digest: str) -> bool:
        try:
            return self._digest() == digest
        except OSError:  # being replaced: look again
            return True

    def _digest(self) -> str:
        files = [self.certificate.ca, self.certificate.cert, self.certificate.key]
        hasher = hashlib.sha256()
        for path in [*files, *([self.client_ca] if self.client_ca else [])]:
            hasher.update(path.read_bytes())
        return hasher.hexdigest()

    async def _serve(
        self, fn: Answer, hook: Hook, request: aiohttp.web.Request
    ) -> aiohttp.web.Response:
        started = time.perf_counter()
        outcome = _Outcome()
        token = _OUTCOME.set(outcome)
        try:
            review = await self._answer(fn, hook, request, outcome)
        except aiohttp.web.HTTPException:
            ADMISSIONS.labels(hook.kind.kind, outcome.operation, "error", "BadRequest").inc()
            raise
        finally:
            _OUTCOME.reset(token)
        response = aiohttp.web.json_response(review)
        answer = review.get("response")
        allowed = answer.get("allowed") if isinstance(answer, Mapping) else None
        ADMISSION_SECONDS.labels(hook.path, str(allowed).lower()).observe(
            time.perf_counter() - started
        )
        result, reason = (
            ("allowed", ALLOWED) if allowed is True else ("denied", outcome.reason or "Other")
        )
        ADMISSIONS.labels(hook.kind.kind, outcome.operation, result, reason).inc()
        return response

    async def _answer(
        self, fn: Answer, hook: Hook, request: aiohttp.web.Request, outcome: _Outcome
    ) -> Mapping[str, Any]:
        """The AdmissionReview answering ``request`` (an HTTP error for one that is none)."""
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise aiohttp.web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY_BYTES, actual_size=request.content_length or 0
            )
        raw = await request.read()  # a chunked body is cut off at client_max_size with a 413
        try:
            review = json.loads(raw)
        except RecursionError:
            outcome.reason = "TooCostly"
            return self._undecodable(raw)
        except ValueError as error:
            raise aiohttp.web.HTTPBadRequest(reason=f"not JSON: {error}"[:200]) from None
        if not _is_review_for(review, hook):
            raise aiohttp.web.HTTPBadRequest(
                reason=f"not an AdmissionReview request for {hook.kind.resource}"
            )
        part = review["request"]
        if part.get("operation") in _OPERATIONS:
            outcome.operation = part["operation"]
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        response: dict[str, Any]
        try:
            response = dict(
                await fn(review, webhook=hook.path, sslpeer=peer, headers=dict(request.headers))
            )
        except RecursionError:
            outcome.reason = "TooCostly"
            namespace, name = identity(part.get("object"))
            message = denial_message(
                hook.kind.kind, namespace, name, [Violation("spec", NESTED_TOO_DEEPLY)]
            )
            response = denial(part["uid"], message, review.get("apiVersion", ""))
        except Exception as error:  # never an error answer for an object: deny, say why
            logger.exception("admission request could not be checked")
            outcome.reason = "CheckFailed"
            namespace, name = identity(part.get("object"))
            violation = Violation("spec", f"could not be checked: {error}"[:500])
            message = denial_message(hook.kind.kind, namespace, name, [violation])
            response = denial(part["uid"], message, review.get("apiVersion", ""))
        return response

    @staticmethod
    def _undecodable(raw: bytes) -> dict[str, Any]:
        """Deny a request Python cannot decode, naming the object as well as possible.

        The API server writes the request's uid, kind, name and namespace before the object, so
        they are read from the text in front of ``"object"``; a request without a uid is no
        AdmissionReview and gets a plain 400.
        """
        head = raw[: raw.find(b'"object"')] if b'"object"' in raw[:8192] else raw[:8192]
        uid = _UID.search(head)
        if uid is None:
            raise aiohttp.web.HTTPBadRequest(reason="not an AdmissionReview request")
        version = _API_VERSION.search(head)
        api_version = version.group(1).decode() if version else "admission.k8s.io/v1"
        found = {key: pattern.search(head) for key, pattern in _HEAD_FIELDS.items()}
        text = {key: m.group(1).decode("utf-8", "replace") if m else "" for key, m in found.items()}
        violation = Violation("spec", NESTED_TOO_DEEPLY)
        answer = denial_message(
            text["kind"] or "object", text["namespace"], text["name"], [violation]
        )
        return denial(uid.group(1).decode(), answer, api_version)
