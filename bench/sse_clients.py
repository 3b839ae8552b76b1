"""Many Server-Sent Events clients in one process: the load side of bench/sse_watch.py.

    python bench/sse_clients.py PORT PATH CLIENTS [HEADER:VALUE ...]

Opens ``CLIENTS`` connections to ``PATH`` (HTTP/1.0, so the stream is not chunked), prints
``ready`` once every one has had its ``ready`` event, then for each revision announced by an
``updated`` event prints one JSON line when every client has it: ``{"revision": R, "at": [...]}``,
the ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on the machine) at which
each client read it. Hand-written over asyncio streams: 1,000 aiohttp clients would cost more
CPU than the server under test.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict


class Clients:
    def __init__(self, count: int) -> None:
        self.count = count
        self.ready = 0
        self.seen: defaultdict[int, list[float]] = defaultdict(list)

    def arrived(self, revision: int, at: float) -> None:
        times = self.seen[revision]
        times.append(at)
        if len(times) == self.count:
            print(json.dumps({"revision": revision, "at": times}), flush=True)
            del self.seen[revision]

    async def client(self, port: int, request: bytes, opened: asyncio.Semaphore) -> None:
        async with opened:  # the listen backlog is finite: open a bounded number at a time
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
            raise SystemExit(f"refused: {head.decode(errors='replace')}")
        event = ""
        while line := await reader.readline():
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                if event == "ready":
                    self.ready += 1
                    if self.ready == self.count:
                        print("ready", flush=True)
                elif event == "updated":
                    at = time.monotonic()
                    self.arrived(int(json.loads(line[5:])["revision"]), at)
            elif line in (b"\n", b"\r\n"):
                event = ""
        raise SystemExit("a stream ended")


async def main(port: int, path: str, count: int, headers: list[str]) -> None:
    lines = [f"GET {path} HTTP/1.0", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
    request = "\r\n".join([*lines, *headers, "", ""]).encode()
    clients = Clients(count)
    opened = asyncio.Semaphore(50)
    await asyncio.gather(*(clients.client(port, request, opened) for _ in range(count)))


if __name__ == "__main__":
    port, path, count, *extra = sys.argv[1:]
    asyncio.run(main(int(port), path, int(count), extra))
