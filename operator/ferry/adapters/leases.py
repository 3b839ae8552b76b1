"""Kubernetes Leases (coordination.k8s.io/v1) through lightkube: read, create, and update under a
resourceVersion precondition, so two replicas can never both believe they won the same write.

What the Lease *means* (who holds it, when it expires, whom to hand it to) is decided in
:mod:`ferry.domain.shards`; this module only moves :class:`LeaseRecord` values in and out of the
API server. RBAC it needs: ``get``, ``create`` and ``update`` on ``leases`` in the lease
namespace, nothing cluster-wide.

A separate client from the reconcilers' (``adapters/kube``), with its own short timeout: a
renewal must not queue behind a burst of ConfigMap writes, and must fail within a renewal period
rather than hang past the holder's deadline (controller-runtime gives leader election its own
client for the same reason). The client's timeouts bound each phase of a request (connect, each
read), not the whole, so every call is also bounded as a whole (``timeout_seconds``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from ferry.adapters import kube_client
from ferry.domain import labels as L
from ferry.domain.shards import LeaseRecord

FIELD_MANAGER = "ferry"
_MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class LeaseConflict(Exception):
    """Someone wrote the Lease first (409: already exists, or a newer resourceVersion)."""


@dataclass(frozen=True)
class StoredLease:
    record: LeaseRecord | None
    """None: there is no such Lease."""
    resource_version: str | None


def wall_clock() -> str:
    """Now, as a Lease's ``renewTime``/``acquireTime`` (MicroTime): for people reading the
    Lease; decisions never compare wall clocks (see ferry.domain.shards)."""
    return dt.datetime.now(dt.UTC).strftime(_MICRO_TIME)


class Leases:
    """The Leases of one namespace."""

    def __init__(
        self, client: AsyncClient, namespace: str, timeout_seconds: float | None = None
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.timeout_seconds = timeout_seconds
        """The longest one call may take, all of it (None: the client's own timeouts only)."""

    @classmethod
    def connect(cls, kubeconfig: str | None, namespace: str, timeout_seconds: float) -> Leases:
        client = kube_client.make_client(
            kubeconfig, timeout_seconds=timeout_seconds, field_manager=FIELD_MANAGER
        )
        return cls(client, namespace, timeout_seconds)

    async def close(self) -> None:
        await self.client.close()

    async def get(self, name: str) -> StoredLease:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                lease = await self.client.get(Lease, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return StoredLease(None, None)
            raise
        return StoredLease(_record(lease), _resource_version(lease))

    async def create(self, name: str, record: LeaseRecord) -> str:
        """Create the Lease; its resourceVersion. :class:`LeaseConflict` if it exists."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                created = await self.client.create(self._lease(name, record, None))
        except ApiError as exc:
            raise _conflict_or(exc) from exc
        return _resource_version(created)

    async def update(self, name: str, record: LeaseRecord, resource_version: str | None) -> str:
        """Replace the Lease if it is still at ``resource_version``; its new resourceVersion.
        :class:`LeaseConflict` if it changed meanwhile (or is gone)."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                updated = await self.client.replace(self._lease(name, record, resource_version))
        except ApiError as exc:
            if exc.status.code == 404:
                raise LeaseConflict(f"Lease {self.namespace}/{name} is gone") from exc
            raise _conflict_or(exc) from exc
        return _resource_version(updated)

    def _lease(self, name: str, record: LeaseRecord, resource_version: str | None) -> Lease:
        annotations = {L.LEASE_HANDOVER: record.handover_to} if record.handover_to else None
        return Lease(
            metadata=ObjectMeta(
                name=name,
                namespace=self.namespace,
                resourceVersion=resource_version,
                labels={L.MANAGED_BY: L.MANAGED_BY_FERRY, L.PART_OF: L.MANAGED_BY_FERRY},
                annotations=annotations,
            ),
            spec=LeaseSpec(
                holderIdentity=record.holder or None,
                leaseDurationSeconds=record.duration_seconds,
                leaseTransitions=record.transitions,
                acquireTime=_parse(record.acquire_time),
                renewTime=_parse(record.renew_time),
            ),
        )


def _record(lease: Lease) -> LeaseRecord:
    spec = lease.spec or LeaseSpec()
    annotations = (lease.metadata.annotations if lease.metadata else None) or {}
    return LeaseRecord(
        holder=spec.holderIdentity or "",
        duration_seconds=int(spec.leaseDurationSeconds or 0),
        transitions=int(spec.leaseTransitions or 0),
        acquire_time=_format(spec.acquireTime),
        renew_time=_format(spec.renewTime),
        handover_to=str(annotations.get(L.LEASE_HANDOVER) or ""),
    )


def _resource_version(lease: Lease) -> str:
    assert lease.metadata is not None and lease.metadata.resourceVersion is not None
    return str(lease.metadata.resourceVersion)


def _format(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime(_MICRO_TIME)


def _parse(value: str) -> dt.datetime | None:
    return dt.datetime.strptime(value, _MICRO_TIME).replace(tzinfo=dt.UTC) if value else None


def _conflict_or(exc: ApiError) -> Exception:
    if exc.status.code == 409:
        return LeaseConflict(str(exc.status.message))
    return exc
