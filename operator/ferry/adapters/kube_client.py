"""How Ferry's lightkube clients reach the API server: lightkube's API over aiohttp's HTTP/1.1.

lightkube (decision 0002) builds each request and reads each answer; the bytes travel through
aiohttp's connection pool and its C HTTP parser instead of httpx2's pure-Python stack (h11,
httpcore, anyio), by way of ``httpx_aiohttp``'s transport, made for exactly this. Measured:
0.62 ms of client CPU per request through httpx2's own transport, 0.38 ms through aiohttp's, for
the same lightkube calls (docs/decisions/0028-kubernetes-http-transport.md). With three writes
per new entry, the HTTP stack had been half of the operator's busy time at scale.

Everything else stays lightkube's: the kubeconfig or in-cluster configuration, its credentials
(client certificate in the TLS context; tokens, token files and exec plugins as request
headers), error types, timeouts. A proxy named in the environment (``HTTPS_PROXY``,
``ALL_PROXY``, unless ``NO_PROXY`` exempts the API server) is used as lightkube and client-go
use it: httpx ignores the environment once it is given a transport, so the transport is given
that proxy itself.
"""

from __future__ import annotations

import urllib.request

import httpx2 as httpx
from httpx_aiohttp.httpx2 import AiohttpTransport
from lightkube import AsyncClient, KubeConfig
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig


def load_config(kubeconfig: str | None) -> KubeConfig:
    """``kubeconfig``, or in a pod its service account (lightkube's in-cluster configuration)."""
    return KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()


def transport(config: KubeConfig | SingleConfig) -> AiohttpTransport:
    """An aiohttp transport trusting what ``config`` trusts and presenting its client certificate.

    Its aiohttp session is made on the first request, on the running loop: a client (and so its
    transport) belongs to one event loop, as each of Ferry's already does.
    """
    single = config.get() if isinstance(config, KubeConfig) else config
    assert single.user is not None, "a kubeconfig context without a user"
    verify = client_adapter.verify_cluster(single.cluster, single.user, single.abs_file)
    return AiohttpTransport(verify=verify, proxy=environment_proxy(single.cluster.server))


def environment_proxy(server: str) -> httpx.Proxy | None:
    """The proxy the environment names for ``server`` (the scheme's ``*_PROXY`` or
    ``ALL_PROXY``; none if ``NO_PROXY`` covers its host), as lightkube honoured it before this
    transport (httpx's ``trust_env``) and client-go does; None: connect directly."""
    url = httpx.URL(server)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return httpx.Proxy(proxy)


def make_client(
    kubeconfig: str | None, *, timeout_seconds: float, field_manager: str | None = None
) -> AsyncClient:
    """A lightkube client for ``kubeconfig`` (None: in-cluster) over aiohttp."""
    return client_for(
        load_config(kubeconfig), timeout_seconds=timeout_seconds, field_manager=field_manager
    )


def client_for(
    config: KubeConfig | SingleConfig,
    *,
    timeout_seconds: float,
    field_manager: str | None = None,
) -> AsyncClient:
    """A lightkube client for an already loaded ``config`` over aiohttp."""
    return AsyncClient(
        config,
        field_manager=field_manager,
        timeout=httpx.Timeout(timeout_seconds),
        transport=transport(config),
    )


def raw_http(config: SingleConfig, *, timeout_seconds: float) -> httpx.AsyncClient:
    """lightkube's HTTP client for ``config`` (``lightkube.config.client_adapter``), for a
    request lightkube's API cannot express; same credentials, timeout and transport."""
    params = client_adapter.ConnectionParams(
        timeout=httpx.Timeout(timeout_seconds), transport=transport(config)
    )
    return client_adapter.AsyncClient(config, params)
