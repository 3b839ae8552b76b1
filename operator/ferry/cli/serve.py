"""`ferry serve`: the authenticated read API, its own process (docs/read-api.md).

Its options are the settings groups it reads (:mod:`ferry.settings`: ``kubernetes``,
``database``, ``cache``, ``flags``, ``serve``), generated like ``ferry run``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from typing import Any

import click

from ferry.cli.run import configure_logging, options_of, settings_from
from ferry.settings import Settings

#: The settings groups ``ferry serve`` reads; the others are the operator's.
GROUPS = ("kubernetes", "database", "cache", "flags", "serve")


@click.command()
@options_of(GROUPS)
@click.option("--verbose", "-v", is_flag=True, help="Log at debug level.")
def serve(verbose: bool, **params: Any) -> None:
    """Serve configuration, live changes and flag evaluation (OFREP) to workloads.

    Every caller authenticates with a bearer token that the Kubernetes API server verifies
    (TokenReview) and is authorised by RBAC (SubjectAccessReview): get on configentries or
    featureflags (ferry.dev) in the namespace it reads. Stateless: run several replicas.
    """
    settings: Settings = settings_from(params, groups=GROUPS)
    configure_logging(verbose)
    if settings.serve.workers == 1:
        asyncio.run(_serve(settings))
    else:
        _supervise(settings)


def _supervise(settings: Settings) -> None:
    """``--serve-workers N``: N forked processes on one port (``SO_REUSEPORT``), this one waiting.

    Forked before any event loop or thread exists. SIGTERM/SIGINT are passed on, and each worker
    finishes what it is serving. A worker that exits on its own stops the others and the command
    fails, so Kubernetes restarts the pod and shows it, instead of a replica quietly serving with
    fewer workers.
    """
    log = logging.getLogger("ferry.serve")
    children: set[int] = set()
    for _ in range(settings.serve.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                asyncio.run(_serve(settings, reuse_port=True))
                code = 0
            except Exception:  # reported; the exit code tells the supervisor
                log.exception("worker %s failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        children.add(pid)

    stopping = False

    def stop(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    while children:
        pid, status = os.wait()
        children.discard(pid)
        if not stopping:
            log.error("worker %s exited (%s): stopping the others", pid, status)
            failed = True
            stop(signal.SIGTERM, None)
    if failed:
        raise SystemExit(1)


async def _serve(settings: Settings, *, reuse_port: bool = False) -> None:
    from ferry.adapters import kube_auth
    from ferry.adapters.cache import Cache
    from ferry.adapters.postgres.latest import LatestReader
    from ferry.api import server

    serve_settings = settings.serve
    budget = kube_auth.ReviewBudget(
        per_second=serve_settings.reviews_per_second, burst=serve_settings.review_burst
    )
    parts = server.Parts(
        cache=Cache.from_settings(settings.cache),
        reader=LatestReader(settings.database.url, max_size=settings.database.pool_max_size),
        auth=kube_auth.KubeAuth(
            kube_auth.make_client(settings.kubernetes.kubeconfig),
            audience=serve_settings.token_audience,
            ttl_seconds=serve_settings.auth_cache_ttl_seconds,
            review_budget=budget,
        ),
        audience=serve_settings.token_audience,
        default_bucketing=settings.flags.default_bucketing,
        heartbeat_seconds=serve_settings.heartbeat_seconds,
        flag_metric_limit=serve_settings.flag_metric_limit,
        max_watches=serve_settings.max_watches,
        max_watches_per_user=serve_settings.max_watches_per_user,
    )
    app = server.make_app(parts)
    ready = asyncio.Event()
    task = asyncio.create_task(
        server.run(
            app,
            serve_settings.host,
            serve_settings.port,
            ready=ready,
            reuse_port=reuse_port,
            max_connections=serve_settings.max_connections,
        )
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        # What was built at start lives as long as the process: keep it out of the collector's
        # full passes (a pause there is every waiting request's latency).
        gc.freeze()
        logging.getLogger("ferry.serve").info(
            "serving on http://%s:%s (pid %s)",
            serve_settings.host,
            serve_settings.port,
            os.getpid(),
        )
    waiting.cancel()
    await task
