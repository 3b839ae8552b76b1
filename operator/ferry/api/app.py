"""An aiohttp app on loopback (or the pod IP in a cluster): /healthz, /readyz, /metrics and
/v1/configs/{namespace}/{name} served from the Redis cache.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ferry.adapters.cache import Cache, CacheUnavailable
from ferry.api import flags as flags_api
from ferry.domain.flags.bucketing import DEFAULT_BUCKETING
from ferry.reconcile.world import World


def make_app(
    cache: Cache,
    is_ready: Callable[[], bool],
    world: World | None = None,
    *,
    default_bucketing: str = DEFAULT_BUCKETING,
) -> web.Application:
    """``default_bucketing``: the flagd generation for a flag whose spec and status name none
    (``Settings.flags.default_bucketing``)."""

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

    async def config(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        try:
            document = await cache.get(namespace, name)
        except CacheUnavailable as exc:
            return web.json_response({"error": str(exc)}, status=503)
        if document is None:
            return web.json_response(
                {"error": f"no config cached for ConfigEntry {namespace}/{name}"}, status=404
            )
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/configs/{namespace}/{name}", config)
    if world is not None:
        flags_api.add_routes(app, world, default_bucketing)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
