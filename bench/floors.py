"""Floors the benchmarks measure Ferry against: stand-ins that do the least any operator must.

- :func:`start_noop_webhook` runs ``noop_webhook.py`` (allows everything, on aiohttp over TLS like
  Ferry's webhooks) and returns webhook configurations shaped exactly like Ferry's, pointing at it.
  :func:`noop_webhook_metrics` reads its own timing of each call.
- :func:`start_noop_controller` runs ``noop_controller.py`` (watch of ConfigEntry's twin →
  server-side applied ConfigMap, nothing else) in every namespace.
- :func:`install_twin` makes ConfigEntry's twin: the same CRD in a group of its own
  (:data:`TWIN_GROUP`), which the no-op controller and webhooks can serve while Ferry runs beside
  them, so that a benchmark can take turns between the two request by request.
- :func:`register` puts a set of webhook configurations in place of whatever is registered;
  :func:`scope` limits configurations to labelled namespaces (and to the twin's group).
- :func:`each_at_once` makes many API calls a few at a time, from one asyncio client: threads
  sharing lightkube's sync client crashed the interpreter here (in a native extension).
- :func:`start_ferry_as` starts Ferry itself in the layout ``--layout`` names (:data:`LAYOUTS`),
  and says which.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from lightkube import AsyncClient, Client
from lightkube.generic_resource import create_namespaced_resource

from ferry.adapters import kube_client
from ferry.devenv.process import Process, free_port, port_is_open, run_kubectl, spawn, wait_until
from ferry.devenv.stack import CRDS_DIR, Stack, install_crds, start_ferry
from ferry.tls import CertificateAuthority
from ferry.webhooks.configurations import CONFIGURATION_NAME, webhook_configurations

HERE = Path(__file__).parent
T = TypeVar("T")
U = TypeVar("U")


def each_at_once(
    client: Client,
    items: Iterable[T],
    call: Callable[[AsyncClient, T], Awaitable[U]],
    parallel: int,
) -> list[U]:
    """``call(async_client, item)`` for every item, ``parallel`` at a time; results in order."""

    async def run() -> list[U]:
        async_client = kube_client.client_for(  # Ferry's HTTP stack (decision 0028)
            client.config,
            timeout_seconds=10.0,
            field_manager="bench",  # lightkube's default
        )
        limit = asyncio.Semaphore(parallel)

        async def one(item: T) -> U:
            async with limit:
                return await call(async_client, item)

        try:
            return list(await asyncio.gather(*(one(item) for item in items)))
        finally:
            await async_client.close()

    return asyncio.run(run())


KINDS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")


def start_noop_webhook(stack: Stack) -> tuple[Process, list[dict[str, Any]]]:
    """The no-op webhook server on a free port, and its configurations (Ferry's, re-pointed).
    The process is added to ``stack.processes``: stopped with the stack, also after a failure."""
    directory = stack.directory / "noop-webhook"
    directory.mkdir(exist_ok=True)
    authority = CertificateAuthority.create("bench-noop-ca")
    cert, key = directory / "tls.crt", directory / "tls.key"
    authority.issue("127.0.0.1", hosts=("127.0.0.1",)).write(cert, key)
    port = free_port()
    argv = [sys.executable, str(HERE / "noop_webhook.py"), str(port), str(cert), str(key)]
    process = spawn("noop-webhook", argv, directory / "log")
    stack.processes.append(process)
    wait_until(process, lambda: port_is_open(port), timeout=30, what="listening")
    bundle = base64.b64encode(authority.cert_pem).decode()
    configurations = webhook_configurations(
        lambda path: {"url": f"https://127.0.0.1:{port}/{path}", "caBundle": bundle}
    )
    return process, configurations


def noop_webhook_metrics(configurations: list[dict[str, Any]]) -> str:
    """``/metrics`` of the no-op webhook ``configurations`` point at (its own timing of each
    call), trusted through their ``caBundle``."""
    client = configurations[0]["webhooks"][0]["clientConfig"]
    context = ssl.create_default_context(cadata=base64.b64decode(client["caBundle"]).decode())
    url = urllib.parse.urljoin(client["url"], "/metrics")
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return str(response.read().decode())


#: ConfigEntry's twin lives here: same kind, same schema, another API group, which Ferry neither
#: watches nor admits.
TWIN_GROUP = "bench.ferry.dev"
TwinEntry = create_namespaced_resource(TWIN_GROUP, "v1alpha1", "ConfigEntry", "configentries")
#: The no-op webhooks' configurations, when registered beside Ferry's.
NOOP_CONFIGURATION_NAME = "bench-noop"


def install_twin(stack: Stack) -> None:
    """ConfigEntry's CRD again in :data:`TWIN_GROUP`: the API server stores, validates and
    watches the twin exactly as it does ConfigEntry, so a controller serving it pays the same."""
    crd = yaml.safe_load((CRDS_DIR / "configentries.yaml").read_text())
    crd["metadata"]["name"] = f"{crd['spec']['names']['plural']}.{TWIN_GROUP}"
    crd["spec"]["group"] = TWIN_GROUP
    directory = stack.directory / "twin-crd"
    directory.mkdir(exist_ok=True)
    (directory / "configentries.yaml").write_text(yaml.safe_dump(crd))
    install_crds(stack.kubectl, stack.kubeconfig, directory)


def start_noop_controller(stack: Stack) -> Process:
    """The no-op controller, serving ConfigEntry's twin (:func:`install_twin`) everywhere; added
    to ``stack.processes`` (stopped with the stack, also after a failure)."""
    argv = [sys.executable, str(HERE / "noop_controller.py"), str(stack.kubeconfig)]
    process = spawn("noop-controller", argv, stack.directory / "noop-controller.log")
    stack.processes.append(process)
    return process


def scope(
    configurations: list[dict[str, Any]],
    selector: dict[str, Any],
    rename: str | None = None,
    group: str | None = None,
) -> list[dict[str, Any]]:
    """Copies of webhook ``configurations`` limited to the namespaces ``selector`` (a
    ``namespaceSelector``) matches; ``rename``: the configurations' new name (and ``noop-``
    before each webhook's, so that they can be registered beside Ferry's); ``group``: the API
    group their rules match instead (the twin's)."""
    out = []
    for configuration in configurations:
        configuration = json.loads(json.dumps(configuration))
        if rename:
            configuration["metadata"]["name"] = rename
        for webhook in configuration["webhooks"]:
            if rename:
                webhook["name"] = f"noop-{webhook['name']}"
            if group:
                for rule in webhook["rules"]:
                    rule["apiGroups"] = [group]
            webhook["namespaceSelector"] = selector
        out.append(configuration)
    return out


def saved_configurations(stack: Stack) -> list[dict[str, Any]]:
    """Ferry's registered webhook configurations, ready to be created again."""
    saved = []
    for kind in KINDS:
        text = run_kubectl(
            stack.kubectl, stack.kubeconfig, "get", kind, CONFIGURATION_NAME, "-o", "json"
        )
        obj = json.loads(text)
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            obj["metadata"].pop(key, None)
        saved.append(obj)
    return saved


def register(stack: Stack, configurations: list[dict[str, Any]]) -> None:
    """Replace the registered webhook configurations (Ferry's, and the no-op ones registered
    beside them) with ``configurations`` (may be none)."""
    for kind in KINDS:
        run_kubectl(
            stack.kubectl,
            stack.kubeconfig,
            "delete",
            kind,
            CONFIGURATION_NAME,
            NOOP_CONFIGURATION_NAME,
            "--ignore-not-found",
        )
    for obj in configurations:
        path = stack.directory / f"{obj['kind']}.json"
        path.write_text(json.dumps(obj))
        run_kubectl(stack.kubectl, stack.kubeconfig, "create", "-f", str(path))
    time.sleep(1)  # the API server's webhook informer catches up


#: How Ferry is run (``--layout``): as the chart runs it, or in one process.
LAYOUTS = {
    "apart": "`ferry webhooks` answers admission, `ferry run` (no webhook port) reconciles",
    "together": "`ferry run --webhook-port`: one process reconciles and answers admission",
}


def add_layout_option(parser: argparse.ArgumentParser) -> None:
    """``--layout`` on an ``argparse`` parser."""
    parser.add_argument(
        "--layout",
        choices=tuple(LAYOUTS),
        default="apart",
        help="apart: as the chart runs Ferry (decision 0035); together: one process",
    )


def start_ferry_as(stack: Stack, layout: str, *, timeout: float = 60) -> Process:
    """Ferry in ``layout`` (printed); returns the reconciling process."""
    operator = start_ferry(stack, together=layout == "together", timeout=timeout)
    print(f"layout: {LAYOUTS[layout]}")
    return operator
