"""Admission webhooks: refuse invalid configuration before the API server stores it.

The handlers are thin: they read the namespace's entries and schemas from the Kopf indexes and
ask :mod:`ferry.domain.admission`, which runs the same checks the reconciler runs. Everything
else here is serving and wiring:

* :class:`FerryWebhookServer` is Kopf's HTTPS server with two changes. Bodies up to
  :data:`MAX_BODY_BYTES` are read (aiohttp's default of 1 MiB would turn a big-but-legal object
  into a webhook *error*), and whatever fails while decoding or dispatching a request — JSON
  nested past Python's recursion limit, Kopf's own recursive diff of such a body — becomes a
  *denial* with a message. With ``failurePolicy: Fail`` an error refuses the request too, but
  the user would only read "failed calling webhook".
* :func:`configure` picks the certificate: a mounted Secret (``tls.crt``/``tls.key``, as
  cert-manager writes them) in a cluster, where the chart installs the configurations from
  ``webhooks/``; otherwise a CA and serving certificate generated with :mod:`ferry.tls`, and
  :func:`register` writes the configurations itself with that CA bundle.
* Kopf's managed configurations are not used: Kopf hard-codes ``timeoutSeconds: 30``, and the
  issue asks for a short timeout. :func:`webhook_configurations` is the single definition, used
  both for registration and for the templates in ``webhooks/`` (a unit test keeps them equal).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import ipaddress
import json
import logging
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf
import yaml
from cryptography import x509
from kopf._core.engines.admission import UnknownResourceError, WebhookError
from lightkube import ApiError, AsyncClient
from lightkube.codecs import from_dict
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from prometheus_client import Histogram

from ferry.adapters.kube import ConfigEntry, ConfigSchema, make_client
from ferry.domain.admission import (
    check_entry,
    check_flag,
    check_schema_change,
    denial_message,
    finalizers_on_create,
    stamp_changes,
)
from ferry.domain.entry import references
from ferry.domain.errors import Violation
from ferry.domain.validation import MAX_DATA_DEPTH
from ferry.domain.kinds import GROUP, VERSION
from ferry.reconcile.reporting import Reporter
from ferry.reconcile.world import NamespaceSpecs
from ferry.settings import Settings
from ferry.tls import CertificateAuthority

logger = logging.getLogger(__name__)

#: Kubernetes allows 1-30 s (default 10). Checks take milliseconds; a webhook that has not
#: answered in 5 s is stuck, and the user should hear so quickly rather than wait half a minute.
TIMEOUT_SECONDS = 5
#: Name of both the Validating- and the MutatingWebhookConfiguration.
CONFIGURATION_NAME = "ferry"
#: The API server accepts request bodies up to 3 MiB; an AdmissionReview carries the object and
#: the old object plus metadata, so allow comfortably more than twice that.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Denials carry 403 Forbidden, as the API server's own admission plugins and policy engines do:
#: kubectl then prints ``Error from server (Forbidden): … denied the request: <message>``.
DENIED_CODE = 403
#: References the entry webhook may fetch live when the index has not caught up yet.
MAX_LIVE_READS = 16
#: A ConfigSchema name no one uses: the readiness probe's dry-run entry refers to it, and only
#: Ferry's webhook refuses a missing schema, so a refusal naming it proves the wiring end to end.
PROBE_SCHEMA = "ferry-webhook-probe-missing-schema"
PROBE_NAMESPACE = "default"
#: What a user reads for data nested past what can even be decoded (Python's recursion limit);
#: the domain's own, lower bound (MAX_DATA_DEPTH) produces a violation with a path instead.
DEEP_MESSAGE = (
    f"is nested too deeply to be checked (configuration data may nest at most "
    f"{MAX_DATA_DEPTH} levels)"
)

#: Time from reading a request to having its answer, inside the operator: the API server's
#: ``apiserver_admission_webhook_admission_duration_seconds`` adds TLS, network and queueing, and
#: its buckets (5 ms, 25 ms, ...) are too coarse for a budget of a few milliseconds.
ADMISSION_SECONDS = Histogram(
    "ferry_admission_duration_seconds",
    "Time the operator spends answering one admission request",
    ["webhook", "allowed"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.5, 2.5),
)

# In-cluster defaults for the templates in webhooks/ (the chart overrides them).
SERVICE_NAME = "ferry-webhook"
SERVICE_NAMESPACE = "ferry-system"


@dataclass(frozen=True)
class Hook:
    """One webhook: its name in the configuration, its URL path (= Kopf handler id), its kind."""

    name: str
    path: str
    plural: str
    mutating: bool


HOOKS = (
    Hook("configentries.validate.ferry.dev", "validate-configentry", "configentries", False),
    Hook("configschemas.validate.ferry.dev", "validate-configschema", "configschemas", False),
    Hook("featureflags.validate.ferry.dev", "validate-featureflag", "featureflags", False),
    Hook("configentries.stamp.ferry.dev", "stamp-configentry", "configentries", True),
    Hook("featureflags.stamp.ferry.dev", "stamp-featureflag", "featureflags", True),
)


_PATHS = frozenset(hook.path for hook in HOOKS)


_CHANGED_SPEC = "request.operation == 'CREATE' || object.spec != oldObject.spec"
# The stamp lives in annotations: a hand edit of it is put back, so those changes are sent too.
_CHANGED_STAMPED = (
    _CHANGED_SPEC
    + " || (has(object.metadata.annotations) ? object.metadata.annotations : {})"
    + " != (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {})"
)


def webhook_configurations(
    client_config: Callable[[str], dict[str, Any]],
    annotations: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The Validating- and MutatingWebhookConfiguration, given each path's ``clientConfig``.

    ``sideEffects: None`` (the checks are pure, so ``--dry-run=server`` is checked too),
    ``failurePolicy: Fail`` (configuration that was not checked is not stored), a short timeout,
    and only CREATE and UPDATE: deleting is always allowed.
    """
    documents = []
    for kind, mutating in (
        ("ValidatingWebhookConfiguration", False),
        ("MutatingWebhookConfiguration", True),
    ):
        webhooks = []
        for hook in HOOKS:
            if hook.mutating != mutating:
                continue
            webhook: dict[str, Any] = {
                "name": hook.name,
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config(hook.path),
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "resources": [hook.plural],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "Namespaced",
                    }
                ],
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": TIMEOUT_SECONDS,
            }
            # Let the API server skip the call when nothing we check changed: the operator's own
            # finalizer patches and users' label edits then cost no admission round trip.
            webhook["matchConditions"] = [
                {"name": "spec-changed", "expression": _CHANGED_SPEC}
                if not mutating
                else {"name": "spec-or-annotations-changed", "expression": _CHANGED_STAMPED}
            ]
            if mutating:
                webhook["reinvocationPolicy"] = "Never"
            webhooks.append(webhook)
        metadata: dict[str, Any] = {
            "name": CONFIGURATION_NAME,
            "labels": {"app.kubernetes.io/part-of": "ferry"},
        }
        if annotations:
            metadata["annotations"] = dict(annotations)
        documents.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": metadata,
                "webhooks": webhooks,
            }
        )
    return documents


def templates() -> dict[str, str]:
    """The in-cluster files under ``webhooks/``: configurations reaching the operator through a
    Service, with cert-manager injecting the CA bundle from the serving certificate."""
    header = (
        "# Generated from ferry.handlers.admission.webhook_configurations; do not edit by hand.\n"
        "# Regenerate (from the repository root):\n"
        "#   .venv/bin/python -c 'import ferry.handlers.admission as a; a.write_templates()'\n"
    )
    inject = {"cert-manager.io/inject-ca-from": f"{SERVICE_NAMESPACE}/{SERVICE_NAME}"}

    def service(path: str) -> dict[str, Any]:
        return {
            "service": {
                "name": SERVICE_NAME,
                "namespace": SERVICE_NAMESPACE,
                "path": f"/{path}",
                "port": 443,
            }
        }

    validating, mutating = webhook_configurations(service, inject)
    dump = functools.partial(yaml.safe_dump, sort_keys=False)
    return {
        "validating-webhook-configuration.yaml": header + dump(validating),
        "mutating-webhook-configuration.yaml": header + dump(mutating),
    }


def write_templates(directory: Path = Path("webhooks")) -> None:
    """Write :func:`templates` into ``directory`` (the repository's ``webhooks/``)."""
    for filename, text in templates().items():
        (directory / filename).write_text(text)


# ---------------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class ServingCertificate:
    ca: Path
    cert: Path
    key: Path
    generated: bool  # True: Ferry made it and registers the configurations itself


def _reusable(ca: Path, cert: Path, key: Path, host: str) -> bool:
    """A certificate generated by an earlier run, still valid for a week and for ``host``.

    Reusing it across restarts keeps the CA bundle in the registered configurations valid while
    the operator restarts, instead of failing every request until it re-registers.
    """
    if not (ca.exists() and cert.exists() and key.exists()):
        return False
    try:
        parsed = x509.load_pem_x509_certificate(cert.read_bytes())
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    try:
        wanted: Any = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        wanted = x509.DNSName(host)
    fresh = parsed.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    return fresh and wanted in sans


def certificates(directory: Path | None, host: str) -> ServingCertificate:
    """The serving certificate: mounted (``tls.crt``/``tls.key``/``ca.crt``) or generated.

    Generated files use other names (``generated-*``) so that a restart never mistakes them for a
    mounted Secret.
    """
    if directory is not None and (directory / "tls.crt").exists():
        ca = directory / "ca.crt"
        return ServingCertificate(
            ca=ca if ca.exists() else directory / "tls.crt",
            cert=directory / "tls.crt",
            key=directory / "tls.key",
            generated=False,
        )
    directory = directory or Path(tempfile.mkdtemp(prefix="ferry-webhook-"))
    directory.mkdir(parents=True, exist_ok=True)
    ca = directory / "generated-ca.crt"
    cert, key = directory / "generated-tls.crt", directory / "generated-tls.key"
    if not _reusable(ca, cert, key, host):
        authority = CertificateAuthority.create("ferry-webhook-ca")
        ca.write_bytes(authority.cert_pem)  # the CA's key is not kept: nothing else is signed
        authority.issue(host, hosts=(host,)).write(cert, key)
    return ServingCertificate(ca=ca, cert=cert, key=key, generated=True)


# ----------------------------------------------------------------------------------------- server

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


class FerryWebhookServer(kopf.WebhookServer):
    """Kopf's webhook server, answering a denial instead of an error for any object.

    ``register`` says whether Ferry writes the webhook configurations itself (generated
    certificate) or the chart does (mounted certificate). :meth:`client_configs` yields what the
    server yields to Kopf: the URL and CA bundle, once at start and again on certificate renewal.
    """

    def __init__(self, *, register: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register = register
        self._configs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async for client_config in super().__call__(fn):
            self._configs.put_nowait(dict(client_config))
            yield client_config

    async def client_configs(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self._configs.get()

    async def _serve(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        started = time.perf_counter()
        response = await self._answer(fn, request)
        try:
            allowed = json.loads(response.body)["response"]["allowed"]  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError):
            allowed = None
        webhook = request.match_info.get("id") or ""
        webhook = webhook if webhook in _PATHS else "other"  # label values stay bounded
        ADMISSION_SECONDS.labels(webhook, str(allowed).lower()).observe(
            time.perf_counter() - started
        )
        return response

    async def _answer(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise aiohttp.web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY_BYTES, actual_size=request.content_length or 0
            )
        raw = await request.content.read()
        try:
            review = json.loads(raw)
        except RecursionError:
            return self._undecodable(raw, DEEP_MESSAGE)
        except ValueError as error:
            raise aiohttp.web.HTTPBadRequest(reason=f"not JSON: {error}"[:200]) from None
        request_part = review.get("request") if isinstance(review, dict) else None
        if not isinstance(request_part, dict) or not isinstance(request_part.get("uid"), str):
            raise aiohttp.web.HTTPBadRequest(reason="not an AdmissionReview request")
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            response = await fn(
                review,
                webhook=request.match_info.get("id"),
                sslpeer=peer,
                headers=dict(request.headers),
            )
        except UnknownResourceError as error:
            raise aiohttp.web.HTTPNotFound(reason=str(error)[:200] or None) from None
        except WebhookError as error:
            raise aiohttp.web.HTTPBadRequest(reason=str(error)[:200] or None) from None
        except RecursionError:
            namespace, name = _identity(request_part.get("object") or {})
            kind = str((request_part.get("kind") or {}).get("kind") or "object")
            message = denial_message(kind, namespace, name, [Violation("spec", DEEP_MESSAGE)])
            response = denial(request_part["uid"], message, review.get("apiVersion", ""))
        except Exception as error:  # never an error answer for an object: deny, say why
            logger.exception("admission request could not be checked")
            message = f"the object could not be checked: {error}"[:500]
            response = denial(request_part["uid"], message, review.get("apiVersion", ""))
        status = response.get("response", {}).get("status")
        if isinstance(status, dict) and status.get("code") == DENIED_CODE:
            status.setdefault("reason", "Forbidden")
        return aiohttp.web.json_response(response)

    @staticmethod
    def _undecodable(raw: bytes, message: str) -> aiohttp.web.Response:
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
        violation = Violation("spec", message)
        answer = denial_message(
            text["kind"] or "object", text["namespace"], text["name"], [violation]
        )
        return aiohttp.web.json_response(denial(uid.group(1).decode(), answer, api_version))


class _NoWebhooks:
    """``settings.admission.server`` when no port is set: Kopf insists on a server when
    admission handlers exist; this one serves nothing, forever."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield {}  # pragma: no cover - never reached


def configure(settings: kopf.OperatorSettings, config: Settings) -> None:
    """Set up Kopf's admission server from Ferry's settings (called first thing at start-up)."""
    settings.admission.managed = None  # Ferry writes the configurations; see the module doc
    logging.getLogger("kopf.objects").addFilter(_DenialsAreNotErrors())
    if config.webhooks.port is None:
        settings.admission.server = _NoWebhooks()
        return
    tls = certificates(config.webhooks.cert_dir, config.webhooks.host)
    settings.admission.server = FerryWebhookServer(
        register=tls.generated,
        addr=config.webhooks.host,
        host=config.webhooks.host,
        port=config.webhooks.port,
        cafile=tls.ca,
        certfile=tls.cert,
        pkeyfile=tls.key,
    )


async def register(settings: kopf.OperatorSettings, config: Settings, ready: asyncio.Event) -> None:
    """Write the webhook configurations for a generated certificate; set ``ready`` once the
    API server demonstrably calls the webhook (a dry-run probe is refused by it).

    With a mounted certificate the chart owns the configurations, and ``ready`` is set as soon
    as the server listens: in a cluster the API server reaches the webhook through a Service,
    which only routes to ready pods, so waiting for the probe there would never end.
    With no webhook port, ``ready`` is set at once. On a clean stop, configurations Ferry
    registered are deleted (as Kopf does for the ones it manages): the webhook is off when the
    operator is off, rather than refusing every write.
    """
    server = settings.admission.server
    if not isinstance(server, FerryWebhookServer):
        ready.set()
        return
    if not server.register:
        async for _ in server.client_configs():
            ready.set()
        return
    client = make_client(config.kubernetes.kubeconfig)
    registered = False
    try:
        async for client_config in server.client_configs():
            base = str(client_config["url"]).rstrip("/")
            bundle = client_config.get("caBundle")

            def local(path: str, base: str = base, bundle: Any = bundle) -> dict[str, Any]:
                return {"url": f"{base}/{path}", **({"caBundle": bundle} if bundle else {})}

            for document in webhook_configurations(local):
                await client.apply(from_dict(document), field_manager="ferry", force=True)
            registered = True
            logger.info("admission webhooks registered at %s", base)
            await _probe(client)
            ready.set()
    finally:
        if registered:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_unregister(client), timeout=5)
        await client.close()


async def _unregister(client: AsyncClient) -> None:
    for resource in (ValidatingWebhookConfiguration, MutatingWebhookConfiguration):
        with contextlib.suppress(ApiError):
            await client.delete(resource, CONFIGURATION_NAME)


async def _probe(client: AsyncClient, log_every: float = 5.0) -> None:
    """Wait until a dry-run ConfigEntry naming a missing schema is refused by Ferry's webhook."""
    probe = ConfigEntry(
        metadata={"name": "ferry-webhook-probe", "namespace": PROBE_NAMESPACE},
        spec={"schemaRef": {"name": PROBE_SCHEMA}, "data": {}},
    )
    loop = asyncio.get_running_loop()
    next_log = loop.time() + log_every
    while True:
        last: str
        try:
            await client.create(probe, namespace=PROBE_NAMESPACE, dry_run=True)
            last = "the dry-run probe was allowed"
        except ApiError as error:
            last = str(error.status.message)
            if PROBE_SCHEMA in last and HOOKS[0].name in last:
                return
        except Exception as error:
            last = f"{type(error).__name__}: {error}"
        if loop.time() > next_log:
            logger.warning("admission webhook not effective yet: %s", last)
            next_log = loop.time() + log_every
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------- handlers

Handler = Callable[..., Awaitable[None]]


def _identity(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    return str(meta.get("namespace") or ""), str(name)


def _deny(kind: str, namespace: str, name: str, violations: list[Violation]) -> None:
    if violations:
        logger.info("denied %s %s/%s: %d violation(s)", kind, namespace, name, len(violations))
        raise kopf.AdmissionError(denial_message(kind, namespace, name, violations), DENIED_CODE)


class _DenialsAreNotErrors(logging.Filter):
    """Kopf logs every refused request as a failed handler at ERROR; a denial is the webhook
    working, so those lines are dropped (``_deny`` logs one INFO line instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Webhook '") and "failed permanently" in text)


def _never_raises(kind: str) -> Callable[[Handler], Handler]:
    """Turn anything unexpected into a denial naming the object: with ``failurePolicy: Fail``
    an error refuses the write as well, but says nothing useful to the user."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(**kwargs: Any) -> None:
            try:
                await _checked(**kwargs)
            except kopf.AdmissionError as denied:
                _audit_denial(kind, kwargs, str(denied))
                raise

        async def _checked(**kwargs: Any) -> None:
            try:
                await handler(**kwargs)
            except kopf.AdmissionError:
                raise
            except RecursionError:
                namespace, name = _identity(kwargs.get("body") or {})
                violation = Violation("spec", DEEP_MESSAGE)
                _deny(kind, namespace, name, [violation])
            except Exception as error:
                logger.exception("admission check failed")
                namespace, name = _identity(kwargs.get("body") or {})
                violation = Violation("spec", f"could not be checked: {error}"[:500])
                _deny(kind, namespace, name, [violation])

        return wrapper

    return decorate


_reporters: dict[str, Reporter] = {}


def _audit_denial(kind: str, kwargs: Mapping[str, Any], message: str) -> None:
    """Record a refused write in the audit trail (not dry runs: nothing would have been stored)."""
    memo = kwargs.get("memo")
    runtime = memo.get("runtime") if isinstance(memo, Mapping) else None
    if runtime is None or kwargs.get("dryrun"):
        return
    reporter = _reporters.setdefault(kind, Reporter(kind, runtime.kube, runtime.store))
    namespace, name = _identity(kwargs.get("body") or {})
    username = str((kwargs.get("userinfo") or {}).get("username") or "") or None
    reporter.audit(
        "admission-denied", namespace, name, username=username, details={"message": message}
    )


def _skip(operation: str | None, old: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """Updates that leave ``spec`` alone are not re-checked: the operator must be able to add or
    remove its finalizer, and users to label, an object stored before the webhook existed (or
    made invalid by a ``compatibility: None`` schema change). Deleting objects are let go."""
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return operation == "UPDATE" and old is not None and old.get("spec") == body.get("spec")


def _specs(index: Any, namespace: str) -> NamespaceSpecs:
    """Names to stored specs in ``namespace``, read lazily from a Kopf index of snapshots."""
    return NamespaceSpecs(index, namespace)


async def _live_spec(client: AsyncClient | None, resource: Any, namespace: str, name: str) -> Any:
    if client is None:
        return None
    try:
        obj = await asyncio.wait_for(client.get(resource, name, namespace=namespace), timeout=2)
    except (ApiError, TimeoutError):
        return None
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    return spec if isinstance(spec, Mapping) else None


async def _with_live_references(
    client: AsyncClient | None,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    entries: dict[str, Mapping[str, Any]],
    schemas: dict[str, Mapping[str, Any]],
) -> None:
    """Fill in a schema or base the index has not heard of yet, from the API server.

    ``kubectl apply -f`` of a schema and an entry in one file sends them milliseconds apart; the
    watch feeding the index may lag behind, and "schema not found" for a schema that was just
    created would be wrong. Only misses are fetched, so the usual request does no I/O.
    """
    schema_name, bases = references(spec)
    reads = 0
    if schema_name is not None and schema_name not in schemas:
        reads += 1
        if (found := await _live_spec(client, ConfigSchema, namespace, schema_name)) is not None:
            schemas[schema_name] = found
    pending, seen = list(bases), {name}
    while pending and reads < MAX_LIVE_READS:
        base = pending.pop()
        if base in seen:
            continue
        seen.add(base)
        if base not in entries:
            reads += 1
            if (found := await _live_spec(client, ConfigEntry, namespace, base)) is None:
                continue
            entries[base] = found
        pending.extend(references(entries[base])[1])


def _client(memo: Any) -> AsyncClient | None:
    runtime = memo.get("runtime") if isinstance(memo, Mapping) else None
    return runtime.kube.client if runtime is not None else None


_CHANGES = ["CREATE", "UPDATE"]


@kopf.on.validate(GROUP, VERSION, "configentries", id="validate-configentry", operations=_CHANGES)
@_never_raises("ConfigEntry")
async def validate_entry(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    memo: kopf.Memo,
    entries_index: kopf.Index[Any, Any],
    schemas_index: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """ConfigEntry: what the reconciler would refuse (see ``check_entry``), refused now."""
    if _skip(operation, old, body):
        return
    namespace, name = _identity(body)
    spec = body.get("spec")
    entries, schemas = _specs(entries_index, namespace), _specs(schemas_index, namespace)
    if isinstance(spec, Mapping):
        await _with_live_references(_client(memo), namespace, name, spec, entries, schemas)
    _deny("ConfigEntry", namespace, name, check_entry(namespace, name, spec, entries, schemas))


@kopf.on.validate(GROUP, VERSION, "configschemas", id="validate-configschema", operations=_CHANGES)
@_never_raises("ConfigSchema")
async def validate_schema(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    entries_index: kopf.Index[Any, Any],
    schemas_index: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """ConfigSchema: a usable schema, and with ``Backward`` no entry that is valid today broken."""
    if _skip(operation, old, body):
        return
    namespace, name = _identity(body)
    schemas = _specs(schemas_index, namespace)
    # The request's own old object is authoritative for "today", even if the index lags.
    old_spec = (old or {}).get("spec") if operation == "UPDATE" else None
    if isinstance(old_spec, Mapping):
        schemas[name] = old_spec
    else:
        schemas.pop(name, None)
    entries = _specs(entries_index, namespace)
    violations = check_schema_change(namespace, name, body.get("spec"), entries, schemas)
    _deny("ConfigSchema", namespace, name, violations)


@kopf.on.validate(GROUP, VERSION, "featureflags", id="validate-featureflag", operations=_CHANGES)
@_never_raises("FeatureFlag")
async def validate_flag(
    body: kopf.Body, old: kopf.Body | None, operation: str | None, **_: Any
) -> None:
    """FeatureFlag: variants, default, rules and splits as ``check_flag`` (and flagd) need them."""
    if _skip(operation, old, body):
        return
    namespace, name = _identity(body)
    _deny("FeatureFlag", namespace, name, check_flag(body.get("spec")))


def _stamp(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    userinfo: Mapping[str, Any],
    patch: kopf.Patch,
) -> None:
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    username = str((userinfo or {}).get("username") or "")
    for key, value in stamp_changes(operation, old, body, username, now).items():
        patch.metadata.annotations[key] = value
    if (finalizers := finalizers_on_create(operation, body)) is not None:
        patch.metadata["finalizers"] = finalizers


@kopf.on.mutate(GROUP, VERSION, "configentries", id="stamp-configentry", operations=_CHANGES)
@_never_raises("ConfigEntry")
async def stamp_entry(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    userinfo: Mapping[str, Any],
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Record who changed the configuration and when (the revision history reads it); a new
    entry is stored with Ferry's finalizer."""
    _stamp(body, old, operation, userinfo, patch)


@kopf.on.mutate(GROUP, VERSION, "featureflags", id="stamp-featureflag", operations=_CHANGES)
@_never_raises("FeatureFlag")
async def stamp_flag(
    body: kopf.Body,
    old: kopf.Body | None,
    operation: str | None,
    userinfo: Mapping[str, Any],
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Record who changed the flag and when; a new flag is stored with Ferry's finalizer."""
    _stamp(body, old, operation, userinfo, patch)
