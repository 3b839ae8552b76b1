"""Ferry's Kubernetes client (``ferry.adapters.kube_client``: lightkube over aiohttp) reaches a
real API server the way lightkube did on its own, also through a proxy the environment names."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from lightkube.resources.core_v1 import Namespace

from ferry.adapters import kube_client
from tests.support import Kube


class ConnectProxy:
    """The smallest HTTPS proxy: answers ``CONNECT host:port`` and relays bytes both ways,
    remembering what was asked of it."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            self.asked.append(f"{method} {target}")
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))
        finally:
            writer.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()


async def read_default_namespace(kube: Kube) -> str | None:
    """The name of namespace ``default`` as a fresh client of Ferry's reads it."""
    client = kube_client.make_client(str(kube.kubeconfig), timeout_seconds=10.0)
    try:
        found = await client.get(Namespace, "default")
        return found.metadata.name if found.metadata is not None else None
    finally:
        await client.close()


async def test_the_client_reads_from_the_api_server_directly(kube: Kube) -> None:
    assert await read_default_namespace(kube) == "default"


async def test_a_proxy_named_in_the_environment_is_used_and_no_proxy_is_honoured(
    kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = kube_client.load_config(str(kube.kubeconfig)).get().cluster.server
    api_host_port = server.removeprefix("https://")
    proxy = ConnectProxy()
    async with proxy as proxy_url:
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert await read_default_namespace(kube) == "default"
        assert proxy.asked == [f"CONNECT {api_host_port}"]

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert await read_default_namespace(kube) == "default"
        assert proxy.asked == [f"CONNECT {api_host_port}"]  # nothing more went through it
