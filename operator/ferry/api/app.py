"""The operator's own HTTP port: ``/healthz``, ``/readyz`` and ``/metrics``, nothing else.

Whom it trusts: nobody, and it says nothing about any tenant (probes and Prometheus). The read
API (configurations, live changes, flag evaluation) is ``ferry serve``, its own process, which
authenticates every caller (docs/decisions/0019-read-api.md).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ferry.metrics import READY


def make_app(is_ready: Callable[[], bool]) -> web.Application:
    """The port; ``is_ready`` also answers ``ferry_ready`` at each scrape (what alerts read)."""
    READY.set_function(lambda: float(is_ready()))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="indexing")

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
