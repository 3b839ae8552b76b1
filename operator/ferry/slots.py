"""Fair slots: at most ``size`` calls at once, at most ``per_tenant`` of them for one tenant;
waiting tenants take turns (round robin), each tenant's calls in order.

One mechanism for every bounded pool one tenant could otherwise fill for all: the validation
workers (:mod:`ferry.reconcile.isolation`) and the connections to Vault
(:mod:`ferry.adapters.vault`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib


class FairSlots:
    """At most ``size`` calls at once, at most ``per_tenant`` of them for one tenant; waiting
    tenants are served in turn (round robin), each tenant's calls in order. ``acquire`` waits at
    most ``timeout`` seconds (None: no bound), then raises :class:`TimeoutError`; a slot granted
    just as its caller gave up is passed on."""

    def __init__(self, size: int, per_tenant: int) -> None:
        self.free = size
        self.per_tenant = per_tenant
        self.running: collections.Counter[str] = collections.Counter()
        self.waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}

    async def acquire(self, tenant: str, timeout: float | None) -> None:
        if self.free and self.running[tenant] < self.per_tenant and tenant not in self.waiting:
            self._grant(tenant)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(tenant, collections.deque()).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(tenant)  # granted just as the caller gave up: pass it on
            else:
                waiter.cancel()
                self._forget(tenant, waiter)
            raise

    def release(self, tenant: str) -> None:
        self.running[tenant] -= 1
        if self.running[tenant] <= 0:
            del self.running[tenant]
        self.free += 1
        self._dispatch()

    def _grant(self, tenant: str) -> None:
        self.free -= 1
        self.running[tenant] += 1

    def _forget(self, tenant: str, waiter: asyncio.Future[None]) -> None:
        queue = self.waiting.get(tenant)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self.waiting[tenant]
        self._dispatch()

    def _dispatch(self) -> None:
        while self.free:
            for tenant in list(self.waiting):
                if self.running[tenant] < self.per_tenant:
                    queue = self.waiting.pop(tenant)  # re-inserted last: its turn is over
                    waiter = queue.popleft()
                    if queue:
                        self.waiting[tenant] = queue
                    if not waiter.done():
                        self._grant(tenant)
                        waiter.set_result(None)
                    break
            else:
                return
