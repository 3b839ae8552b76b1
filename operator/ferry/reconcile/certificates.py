"""The admission webhook's certificates, kept by the operator in two Secrets (decision 0022).

What cert-manager's self-signed issuer and CA injector do, for installations without it:

* :class:`CertificateKeeper` runs on the **leader** only (the holder of shard 0, as retention
  pruning): it creates the Secret when it is missing, renews the serving certificate and the CA
  as :func:`ferry.domain.certificates.plan` decides, and writes the Secret's ``ca.crt`` into the
  ``caBundle`` of every ValidatingWebhookConfiguration, MutatingWebhookConfiguration and
  APIService annotated ``ferry.dev/inject-ca-from: <namespace>/<name>`` (repairing one changed
  by hand at the next check). Every write carries the ``resourceVersion`` it was computed from,
  so a replica that still believes it leads after losing its Lease gets ``409 Conflict`` instead
  of overwriting the new leader's work.
* :func:`follow` runs on **every** replica: it reads the Secret and writes its certificate files
  where the webhook server reloads them from, without a restart and without waiting for the
  kubelet to refresh a mounted Secret (about a minute, and not at all on a bare API server).

The serving Secret is ``kubernetes.io/tls``: ``tls.crt``/``tls.key`` (serving) and ``ca.crt``
(the CA bundle: the current CA first, then any still trusted during an overlap). Every webhooks
pod reads it. The current CA's key is in a Secret of its own beside it, ``<name>-ca`` (``ca.key``),
which only the operator reads (:func:`key_ref`): a webhooks pod that is taken over cannot sign
certificates the API server trusts. A serving Secret that still holds ``ca.key`` (made so before
2026-11-29, by the chart or by the operator) is taken over: the key is moved out at the next check.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.apiregistration_v1 import APIService
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from ferry import metrics
from ferry.domain import labels
from ferry.domain.certificates import Held, Plan, Policy, bundle_stale, plan, serving_not_after
from ferry.settings import WebhookSettings
from ferry.tls import (
    CertificateAuthority,
    KeyPair,
    ServingCertificate,
    facts,
    issued_by,
    load_certificates,
    serves,
)

logger = logging.getLogger(__name__)

CA_KEY = "ca.key"
#: The files every replica serves from, as cert-manager names them in its Secrets.
SERVED = ("ca.crt", "tls.crt", "tls.key")
#: How many check periods a change takes to reach every reader (see ``Policy.grace``): the
#: leader's injection and each replica's next read of the Secret, plus one for the API server.
GRACE_CHECKS = 3
_FAILURES = (ApiError, httpx.HTTPError)
#: How often a replica that does not lead looks whether it does now.
LEADER_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        namespace, _, name = text.partition("/")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def key_ref(serving: SecretRef) -> SecretRef:
    """The Secret holding the CA's key of the serving Secret ``serving`` (the chart makes the
    same, ``<release>-webhook-tls-ca``)."""
    return SecretRef(serving.namespace, f"{serving.name}-ca")


def policy_of(settings: WebhookSettings) -> Policy:
    return Policy(
        validity=dt.timedelta(seconds=settings.cert_validity_seconds),
        renew_before=dt.timedelta(seconds=settings.cert_renew_before_seconds),
        ca_validity=dt.timedelta(seconds=settings.ca_validity_seconds),
        ca_renew_before=dt.timedelta(seconds=settings.ca_renew_before_seconds),
        grace=dt.timedelta(seconds=GRACE_CHECKS * settings.cert_check_seconds),
    )


@dataclass(frozen=True)
class _Contents:
    """The Secret's files, parsed: what the domain decides on, and what it decides about."""

    held: Held
    bundle: dict[str, x509.Certificate]  # fingerprint → CA, in the Secret's order
    ca: CertificateAuthority | None

    @classmethod
    def read(cls, data: Mapping[str, bytes], hosts: tuple[str, ...]) -> _Contents:
        bundle = {facts(c).fingerprint: c for c in load_certificates(data.get("ca.crt", b""))}
        ca = next(
            (
                found
                for cert in bundle.values()
                if (found := CertificateAuthority.load(cert, data.get(CA_KEY, b""))) is not None
            ),
            None,
        )
        serving = next(iter(load_certificates(data.get("tls.crt", b""))), None)
        if serving is not None and not serves(serving, data.get("tls.key", b""), hosts):
            serving = None
        issuer = next(
            (f for f, c in bundle.items() if serving is not None and issued_by(serving, c)), None
        )
        held = Held(
            bundle=tuple(facts(c) for c in bundle.values()),
            ca=facts(ca.cert) if ca is not None else None,
            serving=facts(serving) if serving is not None else None,
            serving_issuer=issuer,
        )
        return cls(held, bundle, ca)

    def carry_out(
        self, decided: Plan, policy: Policy, hosts: tuple[str, ...], now: dt.datetime
    ) -> dict[str, bytes]:
        """The files after ``decided``: new CA and certificate made here."""
        ca = self.ca
        if decided.new_ca or ca is None:
            ca = CertificateAuthority.create("ferry-webhook-ca", validity=policy.ca_validity)
        current = facts(ca.cert).fingerprint
        others = [_pem(self.bundle[f]) for f in decided.keep if f != current and f in self.bundle]
        files: dict[str, bytes] = {
            "ca.crt": b"".join([ca.cert_pem, *others]),
            CA_KEY: ca.key_pair().key_pem,
        }
        if decided.new_serving:
            pair: KeyPair = ca.issue(
                hosts[0],
                hosts=hosts,
                not_after=serving_not_after(facts(ca.cert), policy.validity, now),
            )
            files["tls.crt"], files["tls.key"] = pair.cert_pem, pair.key_pem
        return files


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


def _decode(secret: Secret | None) -> dict[str, bytes]:
    data = (secret.data if secret is not None else None) or {}
    return {key: base64.b64decode(value) for key, value in data.items()}


def _encode(files: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in files.items()}


async def _read(client: AsyncClient, ref: SecretRef) -> Secret | None:
    try:
        return await client.get(Secret, ref.name, namespace=ref.namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise


class CertificateKeeper:
    """The leader's side; see the module docstring."""

    def __init__(self, client: AsyncClient, settings: WebhookSettings) -> None:
        assert settings.cert_secret is not None
        self.client = client
        self.ref = SecretRef.parse(settings.cert_secret)
        self.key_ref = key_ref(self.ref)
        self.hosts = settings.cert_hosts or (settings.host,)
        self.policy = policy_of(settings)
        self.check_seconds = settings.cert_check_seconds
        self._said: set[str] = set()

    async def run(self, leading: Callable[[], bool]) -> None:
        """Check every ``check_seconds`` while leading, and at once on becoming the leader (a
        missing Secret is made without waiting a period)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        led = False
        while True:
            leads = leading()
            if leads and (not led or loop.time() >= due):
                due = loop.time() + self.check_seconds
                try:
                    await self.check()
                except _FAILURES as error:
                    logger.warning("webhook certificates (Secret %s): %s", self.ref, error)
                except Exception:  # a bug must not end rotation for good: log, try next period
                    logger.exception("webhook certificates (Secret %s): check failed", self.ref)
            led = leads
            await asyncio.sleep(min(self.check_seconds, LEADER_POLL_SECONDS))

    async def check(self) -> None:
        """One round: renew what is due, then bring every annotated CA bundle up to date.

        The key's Secret is written first. Should the serving Secret's write then not happen,
        the new key matches no certificate of the bundle at the next round, which therefore
        makes another new CA, keeping in the bundle whatever signed the certificate being
        served: a key is never needed that was not written, and nothing served stops being
        trusted.
        """
        secret = await _read(self.client, self.ref)
        key_secret = await _read(self.client, self.key_ref)
        files, keys = _decode(secret), _decode(key_secret)
        now = dt.datetime.now(dt.UTC)
        # The key where it is kept, or where it was before (an older leader mid-upgrade may
        # still write it there): whichever signs a CA of the bundle.
        for held_key in (keys.get(CA_KEY), files.get(CA_KEY), b""):
            contents = _Contents.read({**files, CA_KEY: held_key or b""}, self.hosts)
            if contents.ca is not None:
                break
        decided = plan(contents.held, self.policy, now)
        made = contents.carry_out(decided, self.policy, self.hosts, now)
        key = {CA_KEY: made.pop(CA_KEY)}
        wanted = {k: v for k, v in {**files, **made}.items() if k != CA_KEY}
        if key_secret is None:
            await self._create(self.key_ref, key, "Opaque")
        elif keys != key and not await self._write(self.key_ref, key_secret, key):
            return  # someone else wrote it meanwhile: look again next round
        if secret is None:
            await self._create(self.ref, wanted, "kubernetes.io/tls")
        elif wanted != files and not await self._write(self.ref, secret, wanted):
            return
        if decided.new_ca:
            logger.info("webhook certificates: new CA in Secret %s", self.ref)
        if decided.new_serving:
            logger.info("webhook certificates: new serving certificate in Secret %s", self.ref)
        await self.inject(base64.b64encode(wanted["ca.crt"]).decode())

    async def _create(self, ref: SecretRef, files: Mapping[str, bytes], type_: str) -> None:
        secret = Secret(
            metadata=ObjectMeta(name=ref.name, namespace=ref.namespace),
            type=type_,
            data=_encode(files),
        )
        await self.client.create(secret)
        logger.info("webhook certificates: created Secret %s", ref)

    async def _write(self, ref: SecretRef, secret: Secret, files: Mapping[str, bytes]) -> bool:
        """Make ``secret``'s data ``files`` (keys it no longer has removed), unless it changed
        since it was read (False)."""
        assert secret.metadata is not None
        stored = (secret.data or {}).keys()
        gone: dict[str, str | None] = {key: None for key in stored - files.keys()}
        try:
            await self.client.patch(
                Secret,
                ref.name,
                {
                    "metadata": {"resourceVersion": secret.metadata.resourceVersion},
                    "data": {**_encode(files), **gone},
                },
                namespace=ref.namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True

    async def inject(self, bundle: str) -> None:
        """Bring the ``caBundle`` of every annotated object up to date: ``bundle`` for those
        naming this Secret, the ``ca.crt`` of the Secret named for the others (e.g. the history
        API's APIService: another certificate, same injector). Only Secrets of this Secret's
        namespace are read: the annotation cannot be used to copy anything from elsewhere."""
        bundles: dict[str, str | None] = {str(self.ref): bundle}
        for resource in (ValidatingWebhookConfiguration, MutatingWebhookConfiguration, APIService):
            try:
                found = [obj.to_dict() async for obj in self.client.list(resource)]
            except ApiError as error:
                if error.status.code != 403:
                    raise
                self._forbidden(resource.__name__)  # not granted (chart values): not used
                continue
            for body in found:
                named = ((body.get("metadata") or {}).get("annotations") or {}).get(
                    labels.INJECT_CA_FROM
                )
                if named is None:
                    continue
                if named not in bundles:
                    bundles[named] = await self._bundle_of(named)
                wanted = bundles[named]
                if wanted is None:
                    continue
                if resource is APIService:
                    if bundle_stale(body.get("spec", {}).get("caBundle"), wanted):
                        await self._patch(resource, body, {"spec": {"caBundle": wanted}})
                    continue
                stale = [h for h in body.get("webhooks", []) if bundle_stale(_bundle(h), wanted)]
                for hook in stale:
                    hook.setdefault("clientConfig", {})["caBundle"] = wanted
                if stale:
                    await self._patch(resource, body, {"webhooks": body["webhooks"]})

    async def _bundle_of(self, named: str) -> str | None:
        ref = SecretRef.parse(named)
        if ref.namespace != self.ref.namespace or not ref.name:
            self._warn_once(f"{named}: only Secrets in {self.ref.namespace} are injected")
            return None
        ca = _decode(await _read(self.client, ref)).get("ca.crt")
        if not ca:
            self._warn_once(f"{named}: no such Secret, or no ca.crt in it")
            return None
        return base64.b64encode(ca).decode()

    def _forbidden(self, kind: str) -> None:
        self._warn_once(f"not allowed to list {kind}: their CA bundles are not injected", info=True)

    def _warn_once(self, text: str, info: bool = False) -> None:
        if text not in self._said:
            self._said.add(text)
            logger.log(logging.INFO if info else logging.WARNING, "CA injection: %s", text)

    async def _patch(self, resource: Any, body: dict[str, Any], change: dict[str, Any]) -> None:
        metadata = body["metadata"]
        try:
            await self.client.patch(
                resource,
                metadata["name"],
                {"metadata": {"resourceVersion": metadata["resourceVersion"]}, **change},
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status.code != 409:
                raise
            return  # changed meanwhile: looked at again next round
        kind = resource.__name__  # the class is named as the kind (list items carry no kind)
        metrics.CA_BUNDLE_INJECTIONS.labels(kind).inc()
        logger.info("webhook certificates: CA bundle written into %s %s", kind, metadata["name"])


def _bundle(hook: dict[str, Any]) -> str | None:
    bundle = (hook.get("clientConfig") or {}).get("caBundle")
    return str(bundle) if bundle is not None else None


async def follow(
    client: AsyncClient, ref: SecretRef, certificate: ServingCertificate, check_seconds: float
) -> None:
    """Every replica: keep ``certificate``'s files equal to the Secret's (see the module
    docstring). A Secret whose certificate does not go with its key is not written out."""
    written: dict[str, bytes] = {}
    missing_logged = False
    while True:
        try:
            secret = await _read(client, ref)
        except _FAILURES as error:
            logger.warning("webhook certificates: cannot read Secret %s: %s", ref, error)
            secret = None
        files = {k: v for k, v in _decode(secret).items() if k in SERVED}
        if len(files) < len(SERVED) and secret is None and not missing_logged:
            logger.info("webhook certificates: waiting for Secret %s", ref)
            missing_logged = True
        certs = load_certificates(files.get("tls.crt", b""))
        if (
            len(files) == len(SERVED)
            and files != written
            and certs
            and serves(certs[0], files["tls.key"], ())
        ):
            paths = {
                "ca.crt": certificate.ca,
                "tls.crt": certificate.cert,
                "tls.key": certificate.key,
            }
            for name, path in paths.items():
                _replace(path, files[name])
            written = files
        await asyncio.sleep(check_seconds)


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a file)."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
