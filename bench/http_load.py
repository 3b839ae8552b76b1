"""A lean HTTP/1.1 load generator: N keep-alive connections, each sending one request after the
other for a fixed time; prints JSON with the request rate and latency percentiles.

Run as its own process (the load must not share the server's interpreter):
    python bench/http_load.py PORT PATH SECONDS CONNECTIONS [HEADER:VALUE ...]

Hand-written over asyncio streams because a general client (aiohttp, httpx) spends more CPU per
request than the servers measured here, and would measure itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def connection(port: int, request: bytes, until: float, samples: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    clock = time.perf_counter
    try:
        while clock() < until:
            began = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            samples.append(clock() - began)
    finally:
        writer.close()
    return errors


async def main(port: int, path: str, seconds: float, connections: int, headers: list[str]) -> None:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers, "", ""]
    request = "\r\n".join(lines).encode()
    samples: list[float] = []
    began = time.perf_counter()
    until = began + seconds
    errors = await asyncio.gather(
        *(connection(port, request, until, samples) for _ in range(connections))
    )
    elapsed = time.perf_counter() - began
    ordered = sorted(samples)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    print(
        json.dumps(
            {
                "requests": len(samples),
                "errors": sum(errors),
                "rate": len(samples) / elapsed,
                "p50_ms": pct(0.50),
                "p99_ms": pct(0.99),
            }
        )
    )


if __name__ == "__main__":
    port, path, seconds, connections, *extra = sys.argv[1:]
    asyncio.run(main(int(port), path, float(seconds), int(connections), extra))
