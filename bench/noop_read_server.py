"""The floor for the read-API benchmarks: a minimal aiohttp handler serving the same bytes.

    python bench/noop_read_server.py PORT FILE [WORKERS]

No authentication, no Redis: any GET or POST answered from memory with the body Ferry sends.
``WORKERS`` > 1 forks that many processes on the port (``SO_REUSEPORT``), as
``ferry serve --serve-workers`` does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=workers > 1
    )


if __name__ == "__main__":
    main()
