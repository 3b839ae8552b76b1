"""What the read-API benchmarks share: the stack with `ferry serve` on it, the identities, and the
load generator and floors they measure with.

- :func:`identities`: ``ferry serve``'s own service account (``system:auth-delegator`` only) and
  an app's, with RBAC ``get`` on ``configentries`` and ``featureflags`` in :data:`NAMESPACE`.
- :func:`start_serve`: ``ferry serve`` as its own process (``--serve-workers N``), auth cache
  TTL 300 s so no review happens during a measurement once warmed.
- :func:`hey`: the load generator, ``github.com/rakyll/hey`` built from the Go module proxy at an
  explicit version and cached under ``~/.cache/ferry/`` (one builder at a time, a cache hit in
  well under a second), so the load costs the machine compiled code, not a Python interpreter.
  The same generator loads each floor and Ferry.
- :func:`start_nginx`: nginx from Debian's packages (installed with apt-get when missing) serving
  the same bytes: the floor no Python server reaches.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferry.devenv.process import Process, free_port, port_is_open, run_kubectl, spawn, wait_until
from ferry.devenv.stack import Stack, start_stack

HERE = Path(__file__).parent
NAMESPACE = "bench-read"
HEY_MODULE, HEY_VERSION = "github.com/rakyll/hey", "v0.1.4"
CACHE = Path(os.environ.get("FERRY_CACHE_DIR") or Path.home() / ".cache" / "ferry")


# ----------------------------------------------------------------------------- the stack
def kubectl(stack: Stack, *args: str, stdin: str | None = None) -> str:
    if stdin is None:
        return run_kubectl(stack.kubectl, stack.kubeconfig, *args)
    result = subprocess.run(
        [str(stack.kubectl), f"--kubeconfig={stack.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def apply(stack: Stack, *objects: dict[str, Any]) -> None:
    kubectl(stack, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects))


def server_kubeconfig(stack: Stack, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster with ``token`` as the user: ``ferry serve``'s identity."""
    admin = yaml.safe_load(stack.kubeconfig.read_text())
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority"))
        ca = ca if ca.is_absolute() else stack.kubeconfig.parent / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def identities(stack: Stack) -> tuple[str, str]:
    """(ferry serve's token for the API server, the app's token for Ferry)."""
    binding = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    apply(
        stack,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ferry-system"}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "ferry-serve", "namespace": "ferry-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ferry-serve-auth-delegator"},
            "roleRef": binding,
            "subjects": [
                {"kind": "ServiceAccount", "name": "ferry-serve", "namespace": "ferry-system"}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "app", "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read", "namespace": NAMESPACE},
            "rules": [
                {
                    "apiGroups": ["ferry.dev"],
                    "resources": ["configentries", "featureflags"],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": NAMESPACE}],
        },
    )
    server = kubectl(stack, "create", "token", "ferry-serve", "-n", "ferry-system", "--duration=2h")
    app = kubectl(
        stack, "create", "token", "app", "-n", NAMESPACE, "--audience=ferry", "--duration=2h"
    )
    return server.strip(), app.strip()


def start_serve(stack: Stack, server_token: str, workers: int) -> int:
    """``ferry serve --serve-workers workers`` on a free port; returns the port."""
    port = free_port()
    directory = stack.directory / f"serve-{port}"
    directory.mkdir()
    kubeconfig = server_kubeconfig(stack, server_token, directory / "kubeconfig")
    env = {**os.environ, **stack.env(), "KUBECONFIG": str(kubeconfig)}
    argv = [sys.executable, "-m", "ferry", "serve", "--serve-port", str(port)]
    argv += ["--serve-auth-cache-ttl-seconds", "300", "--serve-workers", str(workers)]
    serve: Process = spawn(f"ferry-serve-{workers}", argv, directory / "log", env=env)
    stack.processes.append(serve)
    wait_until(serve, lambda: port_is_open(port), timeout=60, what="listening")
    return port


def call(
    port: int, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request (warms a server's caches; checks what it answers)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET"
    )
    for key, value in headers.items():
        request.add_header(key, value)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def warm(serving: dict[int, int], request: Target) -> tuple[dict[str, str], bytes]:
    """``request`` sent a few times to every worker of every server in ``serving`` (workers →
    port; the kernel spreads connections over a server's workers) so that each one's auth and
    document caches are warm; every answer must be 200 and the same. The last headers and body."""
    answers = set()
    headers: dict[str, str] = {}
    for workers, port in serving.items():
        for _ in range(4 * workers):
            status, headers, body = call(port, request.path, request.headers, request.body)
            assert status == 200, (status, body)
            answers.add(body)
    assert len(answers) == 1, answers
    return headers, answers.pop()


def start_noop(stack: Stack, body: Path, workers: int = 1) -> int:
    """``noop_read_server.py``: a minimal aiohttp handler answering ``body`` to any GET or POST."""
    port = free_port()
    argv = [sys.executable, str(HERE / "noop_read_server.py"), str(port), str(body), str(workers)]
    process = spawn(f"noop-read-{workers}", argv, stack.directory / f"noop-{port}.log")
    stack.processes.append(process)
    wait_until(process, lambda: port_is_open(port), timeout=30, what="listening")
    return port


# ----------------------------------------------------------------------------- Debian tools
def debian_binary(name: str, package: str | None = None) -> str:
    """A program from Debian's packages (nginx, wrk), installed with apt-get when missing, as
    scripts/install-system-deps.sh installs PostgreSQL and Redis."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise SystemExit(f"no {name} and no apt-get here: install {package or name} first")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing {package or name} from Debian's packages...", file=sys.stderr)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package or name],
        check=True,
        timeout=600,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return shutil.which(name) or shutil.which(name, path="/usr/sbin") or name


def start_nginx(stack: Stack, body: Path) -> int:
    """nginx (one worker per core) answering ``body`` to any GET, keep-alive unlimited."""
    port = free_port()
    prefix = stack.directory / f"nginx-{port}"
    prefix.mkdir()
    user = "user root root;" if os.geteuid() == 0 else ""  # its workers read the private tmp dir
    (prefix / "nginx.conf").write_text(
        f"""{user}
worker_processes auto;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port};
    default_type application/json;
    location / {{ root {body.parent}; try_files /{body.name} =404; }}
  }}
}}
"""
    )
    argv = [debian_binary("nginx"), "-e", str(prefix / "error.log"), "-p", str(prefix)]
    argv += ["-c", str(prefix / "nginx.conf")]
    process = spawn("nginx", argv, prefix / "log")
    stack.processes.append(process)
    wait_until(process, lambda: port_is_open(port), timeout=30, what="listening")
    return port


# ----------------------------------------------------------------------------- load: hey
def hey_binary() -> Path:
    """hey, built once with the machine's Go from the module proxy into ~/.cache/ferry/."""
    target = CACHE / f"hey-{HEY_VERSION}" / "hey"
    if target.exists():
        return target
    if not shutil.which("go"):
        raise SystemExit("no Go toolchain on PATH: hey (the load generator) is built with it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the second finds it built
        if not target.exists():
            gobin = target.parent / ".gobin"
            shutil.rmtree(gobin, ignore_errors=True)
            env = {**os.environ, "GOBIN": str(gobin), "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
            env["GOFLAGS"] = ""
            print(f"building {HEY_MODULE}@{HEY_VERSION}...", file=sys.stderr)
            subprocess.run(
                ["go", "install", "-trimpath", "-ldflags", "-s -w", f"{HEY_MODULE}@{HEY_VERSION}"],
                env=env,
                check=True,
                timeout=900,
            )
            (gobin / "hey").rename(target)
            shutil.rmtree(gobin, ignore_errors=True)
    return target


@dataclass
class Target:
    """What one load run asks: ``body`` set means a POST of it (JSON)."""

    name: str
    port: int
    path: str
    headers: dict[str, str]
    body: bytes | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def run_load(argv: list[str], seconds: float) -> str:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 120, check=True
    ).stdout


def hey(target: Target, seconds: float, connections: int) -> dict[str, Any]:
    """Load ``target`` for ``seconds`` over ``connections`` keep-alive connections; the rate, the
    latency percentiles and the count of answers other than 200."""
    argv = [str(hey_binary()), "-z", f"{seconds:g}s", "-c", str(connections)]
    for key, value in target.headers.items():
        argv += ["-H", f"{key}: {value}"]
    if target.body is not None:
        argv += ["-m", "POST", "-T", "application/json", "-d", target.body.decode()]
    out = run_load([*argv, target.url], seconds)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50% in ([\d.]+) secs", out)
    p99 = re.search(r"99% in ([\d.]+) secs", out)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    if not (rate and p50 and p99):
        raise SystemExit(f"could not read hey's output:\n{out}")
    return {
        "rate": float(rate.group(1)),
        "p50_ms": float(p50.group(1)) * 1000,
        "p99_ms": float(p99.group(1)) * 1000,
        "errors": sum(n for c, n in codes.items() if c != 200) + ("Error distribution" in out),
    }


def wrk(target: Target, seconds: float, connections: int) -> dict[str, Any]:
    """As :func:`hey`, with wrk (Debian's; C, one event-loop thread): a load that leaves the
    servers most of the machine."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in target.headers.items()]
    if target.body is not None:
        lines += ['wrk.method = "POST"', f"wrk.body = {json.dumps(target.body.decode())}"]
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines += [
        "function done(summary, latency, requests)",
        "  local p = function(q) return latency:percentile(q) end",
        '  io.write(string.format("p50 %d p99 %d\\n", p(50), p(99)))',
        "end",
    ]
    script.write_text("\n".join(lines) + "\n")
    try:
        argv = [debian_binary("wrk"), "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s"]
        out = run_load([*argv, "-s", str(script), target.url], seconds)
    finally:
        script.unlink()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = re.search(r"p50 (\d+) p99 (\d+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)  # none expected, not even 304
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if not (rate and pct):
        raise SystemExit(f"could not read wrk's output:\n{out}")
    return {
        "rate": float(rate.group(1)),
        "p50_ms": int(pct.group(1)) / 1000,
        "p99_ms": int(pct.group(2)) / 1000,
        "errors": (int(errors.group(1)) if errors else 0) + bool(socket_errors),
    }


def python_load(target: Target, seconds: float, connections: int) -> dict[str, Any]:
    """As :func:`hey`, with ``http_load.py`` (asyncio, one core): the generator of the first
    measurements, kept to compare with them. GET only."""
    if target.body is not None:
        raise SystemExit("--load python sends GET only")
    argv = [sys.executable, str(HERE / "http_load.py"), str(target.port), target.path]
    argv += [f"{seconds:g}", str(connections), *(f"{k}: {v}" for k, v in target.headers.items())]
    return dict(json.loads(run_load(argv, seconds)))


LOADS = {"wrk": wrk, "hey": hey, "python": python_load}


# ----------------------------------------------------------------------------- a run
def arguments(doc: str) -> argparse.Namespace:
    """The options bench/read_api.py and bench/ofrep.py share."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="ferry serve's, beside 1")
    parser.add_argument("--load", choices=sorted(LOADS), default="wrk")
    return parser.parse_args()


def on_stack(measure: Callable[[Stack], None], *, with_operator: bool = False) -> None:
    """``measure`` on a local stack of its own, stopped afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        stack = start_stack(Path(tmp), with_operator=with_operator)
        try:
            measure(stack)
        finally:
            stack.stop()


def compare(
    stack: Stack,
    args: argparse.Namespace,
    serving: dict[int, int],
    request: Target,
    answer: bytes,
    *,
    nginx: bool = False,
) -> None:
    """``request`` against ``ferry serve`` (``serving``: workers → port) and against floors
    answering ``answer`` from memory (nginx for GETs; the minimal aiohttp handler with as many
    processes as each Ferry), taking turns; prints the table."""
    body = stack.directory / "answer.json"
    body.write_bytes(answer)
    floors = [("floor: nginx, same bytes", start_nginx(stack, body))] if nginx else []
    floors += [
        (f"floor: minimal aiohttp handler, {n} process(es)", start_noop(stack, body, n))
        for n in serving
    ]
    targets = [
        dataclasses.replace(request, name=name, port=port, headers={}) for name, port in floors
    ]
    targets += [
        dataclasses.replace(request, name=f"ferry serve --serve-workers {n}", port=port)
        for n, port in serving.items()
    ]
    method = "POST" if request.body is not None else "GET"
    print(
        f"{method} {request.path}: {len(answer)} bytes answered, {args.connections} connections, "
        f"{args.rounds} rounds x {args.seconds:g} s each, load: {args.load} in a second process",
        flush=True,
    )
    take_turns(targets, args.rounds, lambda t: LOADS[args.load](t, args.seconds, args.connections))


def take_turns(
    targets: list[Target], rounds: int, measure: Callable[[Target], dict[str, Any]]
) -> None:
    """Targets take turns, ``rounds`` times, so each meets the machine in the same states; prints
    each one's best round (by rate) with the median rate of all."""
    results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            outcome = measure(target)
            if outcome["errors"]:
                raise SystemExit(f"{target.name}: {outcome['errors']} answers were not 200")
            results[target.name].append(outcome)
    width = max(len(t.name) for t in targets)
    for name, runs in results.items():
        best = max(runs, key=lambda r: r["rate"])
        median = statistics.median(r["rate"] for r in runs)
        print(
            f"  {name:<{width}} {best['rate']:8.0f} req/s (median {median:7.0f})"
            f"  p50 {best['p50_ms']:6.2f} ms  p99 {best['p99_ms']:6.2f} ms",
            flush=True,
        )
