"""Start-up and clean-up: build the adapters, migrate the database, start the workers."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from typing import Any

import kopf

from ferry import metrics
from ferry.adapters.cache import Cache
from ferry.adapters.kube import Kube, make_client
from ferry.adapters.leases import Leases
from ferry.adapters.postgres import Store, StoreUnavailable, migrate
from ferry.api.app import make_app, serve
from ferry.domain import kinds
from ferry.domain.retention import Retention
from ferry.domain.shards import FLAGS_SHARD
from ferry.handlers import followed as follow
from ferry.handlers import watches
from ferry.reconcile import isolation
from ferry.reconcile.blocked import GoneWatches
from ferry.reconcile.certificates import CertificateKeeper
from ferry.reconcile.entries import EntryReconciler
from ferry.reconcile.flags import FlagReconciler
from ferry.reconcile.leases import LeaseManager
from ferry.reconcile.resync import resync
from ferry.reconcile.schemas import SchemaReconciler
from ferry.reconcile.secrets import VaultSecrets
from ferry.reconcile.workqueue import Backoff, QueueKey, WorkQueue
from ferry.reconcile.world import World
from ferry.runtime import Runtime
from ferry.settings import Settings
from ferry.webhooks import registration as admission
from ferry.webhooks.handlers import Admission
from ferry.webhooks.thread import AdmissionThread

logger = logging.getLogger(__name__)


def _observe_wait(key: QueueKey, seconds: float) -> None:
    metrics.QUEUE_WAIT.labels(key.kind).observe(seconds)


# Any failure ends the process (PERMANENT: Kopf would otherwise run this again, on top of the
# tasks, threads and clients a half-done start-up left behind); the kubelet restarts it and the
# log says why, as with any controller whose manager fails to start.
@kopf.on.startup(errors=kopf.ErrorsMode.PERMANENT)
async def start(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    config: Settings = memo["settings"]
    # Kopf runs start-up and clean-up only: Ferry's informers follow every object (decision 0031).
    settings.posting.enabled = False  # Ferry posts its own Events, on its own objects
    webhooks = admission.configure(config.webhooks)
    isolation.configure(config.validation.workers, config.validation.timeout_seconds)
    isolation.start()  # the reconcilers' validation workers warm before the first reconcile

    await asyncio.to_thread(migrate, config.database.url)
    vault = VaultSecrets.from_settings(config.vault)
    memo["vault"] = vault
    own = watches.OwnIndexes()  # Ferry's kinds and the namespaces (informers, below)
    followed = follow.FollowedIndexes()  # ConfigMaps, Secrets and workloads (informers, below)
    world = World(
        entries=own.entries,
        schemas=own.schemas,
        flags=own.flags,
        namespaces=own.namespaces,
        configmaps=followed.configmaps,
        secrets=followed.secrets,
        workloads=followed.workloads,
    )
    kube = Kube(make_client(config.kubernetes.kubeconfig))
    store = Store(config.database.url, max_size=config.database.pool_max_size)
    await store.open()
    cache = Cache.from_settings(config.cache)
    backoff = Backoff(
        initial=config.reconcile.requeue_initial_seconds,
        maximum=config.reconcile.requeue_max_seconds,
    )
    queue: WorkQueue[QueueKey] = WorkQueue(backoff, waited=_observe_wait)
    kube.events.busy = lambda: len(queue) > 0  # Events wait behind a burst (decision 0030)
    runtime = Runtime(
        settings=config,
        world=world,
        kube=kube,
        store=store,
        cache=cache,
        entries=EntryReconciler(
            world,
            kube,
            store,
            cache,
            parallel_applies=config.reconcile.parallel_applies,
            vault=vault,
            schedule=lambda ns, name, delay: queue.add_after(
                QueueKey(kinds.CONFIG_ENTRY.kind, ns, name), delay
            ),
        ),
        schemas=SchemaReconciler(world, kube, store),
        flags=FlagReconciler(
            world,
            kube,
            store,
            cache,
            queue,
            followed.flagsets,
            default_bucketing=config.flags.default_bucketing,
        ),
        queue=queue,
    )
    memo["runtime"] = runtime

    def ready() -> bool:  # indexes filled, and the admission webhooks in force
        return runtime.ready.is_set() and runtime.webhooks_ready.is_set()

    # Listening comes before anything is announced to the cluster (the webhooks, below): a
    # process that cannot take its port stops here without having pointed the API server at it.
    memo["api_runner"] = await serve(make_app(ready), config.api.host, config.api.port)
    # Long-lived watches on their own client, so they never hold a connection writes wait for.
    memo["watch_client"] = watcher = make_client(config.kubernetes.kubeconfig)
    # Watches of names someone else's object holds: a client of their own, so however many
    # conflicts tenants make, they never take a connection the informers need.
    memo["blocked_client"] = blocked = make_client(config.kubernetes.kubeconfig)
    runtime.entries.blocked = GoneWatches(blocked, lambda key: runtime.enqueue_entry(*key))
    timeout = int(config.kubernetes.watch_timeout_seconds)
    followers = [
        *watches.informers(watcher, own, runtime, server_timeout=timeout),
        *follow.informers(watcher, followed, runtime, vault, server_timeout=timeout),
    ]
    for informer in followers:
        name = f"ferry-follow-{informer.kind}"
        runtime.tasks.append(asyncio.create_task(informer.run(), name=name))
    runtime.tasks.append(
        asyncio.create_task(_indexed(runtime, [i.synced for i in followers]), name="ferry-indexed")
    )
    for kind, index in (("ConfigMap", world.configmaps), ("Secret", world.secrets)):
        metrics.MATERIALISED.labels(kind).set_function(
            lambda index=index: sum(len(store) for store in index.values())
        )
    leader = config.leader
    if leader.lease_namespace is not None:
        runtime.shards = LeaseManager(
            # Its own client, timing out within a renewal period (see adapters/leases).
            Leases.connect(
                config.kubernetes.kubeconfig, leader.lease_namespace, leader.renew_seconds
            ),
            leader,
            leader.identity or f"{socket.gethostname()}_{os.getpid()}",
            on_acquired=runtime.take_over,
        )
    if webhooks is not None:  # served on a thread of their own (ferry.webhooks.thread)
        memo["admission"] = thread = AdmissionThread(
            webhooks,
            Admission(world, config.vault),
            lambda: make_client(config.kubernetes.kubeconfig),
            workers=config.validation.workers,
            timeout_seconds=config.validation.timeout_seconds,
            on_failure=functools.partial(
                asyncio.get_running_loop().call_soon_threadsafe, memo["stop"].set
            ),
        )
        thread.start()
    runtime.tasks.append(
        asyncio.create_task(
            admission.register(
                webhooks, config.webhooks, config.kubernetes.kubeconfig, runtime.webhooks_ready
            ),
            name="ferry-webhooks",
        )
    )

    if config.webhooks.cert_secret is not None:  # the leader keeps them (decision 0022)
        keeper = CertificateKeeper(kube.client, config.webhooks)
        leading = lambda: runtime.shards.holds(FLAGS_SHARD)  # noqa: E731 - one replica: shard 0's
        runtime.tasks.append(asyncio.create_task(keeper.run(leading), name="ferry-certificates"))

    runtime.tasks.append(asyncio.create_task(_work(runtime), name="ferry-workers"))
    runtime.tasks.append(asyncio.create_task(_resync(runtime), name="ferry-resync"))
    runtime.tasks.append(asyncio.create_task(_prune(runtime), name="ferry-prune"))


async def _indexed(runtime: Runtime, followed: list[asyncio.Event]) -> None:
    """Ready once every informer's first list is in."""
    for synced in followed:
        await synced.wait()
    runtime.ready.set()


async def _work(runtime: Runtime) -> None:
    await runtime.ready.wait()
    # Leases are sought only now: a replica takes a shard when it can serve it (indexes filled),
    # and its first reconciles see the whole cluster.
    runtime.tasks.append(asyncio.create_task(runtime.shards.run(), name="ferry-leases"))
    logger.info("indexes filled; reconciling")
    await runtime.queue.run(runtime.reconcile, runtime.settings.reconcile.workers)


async def _resync(runtime: Runtime) -> None:
    """Level-triggered safety net: look at everything again now and then, a few at a time
    (``ferry.reconcile.resync``)."""
    await runtime.ready.wait()
    period = runtime.settings.reconcile.resync_seconds
    await resync(runtime.resync_keys, runtime.enqueue_held, period)


async def _prune(runtime: Runtime) -> None:
    """Apply the history retention policy now and then (no-op when nothing is configured)."""
    history = runtime.settings.history
    policy = Retention(
        revisions=history.retain_revisions,
        days=history.retain_days,
        audit_days=history.audit_retain_days,
    )
    if policy == Retention():
        return
    while True:
        if not runtime.shards.holds(FLAGS_SHARD):  # one replica prunes: the holder of shard 0
            await asyncio.sleep(min(history.prune_seconds, 30.0))
            continue
        try:
            pruned = await runtime.store.prune(policy)
            if pruned.revisions or pruned.audit_rows:
                logger.info(
                    "retention: removed %s revision(s), %s audit row(s)",
                    pruned.revisions,
                    pruned.audit_rows,
                )
        except StoreUnavailable as exc:
            logger.warning("retention: %s", exc)
        await asyncio.sleep(history.prune_seconds)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    # Kopf waits for the stop flag in a task of its own, and at exit gives every task still
    # pending 5 s: set, that task ends now, whatever stopped the operator.
    memo["stop"].set()
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)
    await runtime.shards.release()  # after the workers stopped: the next holder starts clean
    await memo["api_runner"].cleanup()
    if memo.get("admission") is not None:
        await memo["admission"].stop()
    await runtime.kube.close()
    if runtime.entries.blocked is not None:
        await runtime.entries.blocked.close()
    await memo["watch_client"].close()
    await memo["blocked_client"].close()
    await runtime.store.close()
    await runtime.cache.close()
    await isolation.close()
    if memo.get("vault") is not None:
        await memo["vault"].close()
