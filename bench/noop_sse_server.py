"""The floor for bench/sse_watch.py: a minimal aiohttp Server-Sent Events broadcaster.

    python bench/noop_sse_server.py PORT

``GET`` any path: a stream that starts with ``event: ready``; ``POST /publish`` with a JSON body:
``event: updated`` with that body, written to every open stream. No authentication, no Redis.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


def main() -> None:
    port = int(sys.argv[1])
    streams: set[web.StreamResponse] = set()

    async def watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: ready\ndata: {}\n\n")
        streams.add(response)
        await asyncio.Event().wait()  # until the benchmark stops the server
        return response

    async def publish(request: web.Request) -> web.Response:
        event = b"event: updated\ndata: " + await request.read() + b"\n\n"
        for stream in list(streams):
            try:
                await stream.write(event)
            except ConnectionError:
                streams.discard(stream)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/publish", publish)
    app.router.add_get("/{tail:.*}", watch)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
