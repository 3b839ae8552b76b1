"""``ferry webhooks``: the admission webhooks answered by a process that reconciles nothing.

Answered inside ``ferry run``, on a thread of its own (:mod:`ferry.webhooks.thread`), a stored
apply still waited for the reconciling process: measured across five runs, Ferry's webhooks
took 6.8 ms more at p99 than no-op webhooks, against a goal of 2 ms; with a process that
reconciles nothing answering, 4.6 and 9.2 ms *less* (docs/benchmarks.md, "Admission latency";
decision 0035). So in a cluster the webhooks are a Deployment of their own behind the webhook
Service, as cert-manager's and Kyverno's are, and the operator's Deployment serves none.

This process runs the same webhook server, handlers and validation workers as ``ferry run``
(the :class:`~ferry.webhooks.thread.AdmissionThread`), registers the configurations or follows
the certificate Secret the same way (:mod:`ferry.webhooks.registration`), and keeps only the
indexes admission reads: entries, schemas and namespaces (:func:`watches.admission_informers`),
not the ConfigMaps, Secrets and workloads the reconcilers follow. It takes no Lease, connects to
neither PostgreSQL nor Redis, and writes nothing but its webhook configurations (and those only
with a certificate it generated itself). Its API port serves ``/healthz``, ``/readyz`` (indexes
listed and the webhooks in force) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal

from ferry.adapters.informer import Informer
from ferry.adapters.kube import make_client
from ferry.api.app import make_app, serve
from ferry.handlers import watches
from ferry.reconcile.world import World
from ferry.settings import AdmissionSettings
from ferry.webhooks import registration
from ferry.webhooks.handlers import Admission
from ferry.webhooks.thread import AdmissionThread

logger = logging.getLogger(__name__)


async def run(config: AdmissionSettings) -> None:
    """Serve until SIGTERM or SIGINT, or until a part of it fails (then raise, so the process
    exits non-zero and is restarted)."""
    server = registration.configure(config.webhooks)
    if server is None:
        raise ValueError("ferry webhooks needs webhooks.port (--webhook-port)")
    kubeconfig = config.kubernetes.kubeconfig
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    indexes = watches.OwnIndexes()
    world = World(
        entries=indexes.entries,
        schemas=indexes.schemas,
        flags=indexes.flags,  # never filled: admission does not read other flags
        namespaces=indexes.namespaces,
        configmaps={},
        secrets={},
        workloads=(),
    )
    webhooks_ready = asyncio.Event()
    informers: list[Informer] = []  # below, once listening

    def ready() -> bool:
        return webhooks_ready.is_set() and all(i.synced.is_set() for i in informers)

    failed: list[BaseException] = []

    def thread_failed() -> None:  # called on this loop; the thread logged why
        failed.append(RuntimeError("the admission webhooks can no longer be served"))
        stop.set()

    # Listening first: a process that cannot take its port stops before it registers anything.
    runner = await serve(make_app(ready), config.api.host, config.api.port)
    client = make_client(kubeconfig)
    informers += watches.admission_informers(
        client, indexes, server_timeout=int(config.kubernetes.watch_timeout_seconds)
    )
    thread = AdmissionThread(
        server,
        Admission(world, config.vault),
        lambda: make_client(kubeconfig),
        workers=config.validation.workers,
        timeout_seconds=config.validation.timeout_seconds,
        on_failure=functools.partial(loop.call_soon_threadsafe, thread_failed),
    )
    tasks = [asyncio.create_task(i.run(), name=f"ferry-follow-{i.kind}") for i in informers]

    def ended(task: asyncio.Task[None]) -> None:  # none of them ends while all is well
        if task.cancelled():
            return
        failed.append(task.exception() or RuntimeError(f"{task.get_name()} ended"))
        stop.set()

    try:
        thread.start()
        tasks.append(
            asyncio.create_task(
                registration.register(server, config.webhooks, kubeconfig, webhooks_ready),
                name="ferry-webhooks",
            )
        )
        for task in tasks:
            task.add_done_callback(ended)
        await stop.wait()
    finally:
        for task in tasks:
            task.remove_done_callback(ended)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await thread.stop()
        await runner.cleanup()
        await client.close()
    if failed:
        raise failed[0]
