"""The image built from the Dockerfile, run as a cluster would run it: non-root, read-only root
filesystem, `ferry` as entrypoint, against the real control plane, PostgreSQL and Redis, until it
reconciles the examples.

No registry is reachable here, so scripts/build-image.sh builds it with buildah on a Debian base
made with debootstrap, and podman runs it. Without those tools the test is skipped and says so;
`make image` installs them from Debian's packages and runs this test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ferry.devenv.controlplane import start_control_plane
from ferry.devenv.process import free_port
from ferry.devenv.stack import install_crds
from tests.support import Kube, condition, eventually, get_or_none

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("buildah", "podman", "debootstrap", "runc")
UID = "10001"


def test_lock_file_pins_every_dependency_of_pyproject_with_hashes() -> None:
    """requirements.lock (what the image installs) matches pyproject.toml's exact pins."""
    lock = (REPO / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.M))
    normalise = {k.lower().replace("_", "-"): v for k, v in pinned.items()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, version = re.fullmatch(
            r"([A-Za-z0-9_.-]+)(?:\[[^]]+\])?==(\S+)", requirement
        ).groups()  # type: ignore[union-attr]
        assert normalise.get(name.lower().replace("_", "-")) == version, (
            f"requirements.lock does not pin {requirement}: regenerate it (see docs/install.md)"
        )
    # Every requirement carries at least one hash, so pip installs with --require-hashes.
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n\n", 1)[-1].strip())
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def podman(
    *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", "vfs")}
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"image smoke test skipped: {', '.join(missing)} not installed "
            "(`make image` installs buildah, podman, debootstrap and runc and runs it)"
        )
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-image.sh")],
        capture_output=True,
        text=True,
        timeout=3000,
        check=False,
    )
    assert result.returncode == 0, f"scripts/build-image.sh failed:\n{result.stderr[-4000:]}"
    return result.stdout.strip().splitlines()[-1]


def _embedded_kubeconfig(source: Path, target: Path) -> Path:
    """The control plane's kubeconfig with its files inlined, readable by the image's user only
    (the originals belong to root, mode 0600)."""
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        path = cluster["cluster"].pop("certificate-authority")
        cluster["cluster"]["certificate-authority-data"] = _b64(path)
    for user in config["users"]:
        for field in ("client-certificate", "client-key"):
            user["user"][f"{field}-data"] = _b64(user["user"].pop(field))
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    os.chown(target, int(UID), int(UID))
    return target


def _b64(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


@pytest.fixture
def container(
    image: str,
    k8s_bin_dir: Path,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[tuple[str, Kube, int]]:
    """The image running `ferry run` against its own API server (no other operator of the session
    acts there), registering its webhooks in a writable volume; the root filesystem read-only."""
    control_plane = start_control_plane(tmp_path / "k8s", k8s_bin_dir)
    name = f"ferry-smoke-{uuid.uuid4().hex[:8]}"
    try:
        install_crds(control_plane.kubectl, control_plane.kubeconfig)
        webhook_dir = tmp_path / "webhook"
        webhook_dir.mkdir()
        os.chown(webhook_dir, int(UID), int(UID))
        kubeconfig = _embedded_kubeconfig(control_plane.kubeconfig, tmp_path / "kubeconfig")
        api_port, webhook_port = free_port(), free_port()
        podman(
            "run", "--detach", "--name", name,
            "--runtime", "runc",  # crun refuses hybrid cgroup hierarchies such as this machine's
            "--read-only", "--user", f"{UID}:{UID}", "--network", "host",
            # Within this machine's limits (the defaults would raise them, which needs privilege).
            "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
            "--volume", f"{kubeconfig}:/etc/ferry/kubeconfig:ro",
            "--volume", f"{webhook_dir}:/var/run/ferry/webhook",
            "--env", "KUBECONFIG=/etc/ferry/kubeconfig",
            "--env", f"FERRY_DATABASE_URL={database_url}",
            "--env", f"FERRY_REDIS_URL={redis_url}",
            image,
            "run", f"--api-port={api_port}", f"--webhook-port={webhook_port}",
            "--webhook-dir=/var/run/ferry/webhook",
        )  # fmt: skip

        def ready() -> bool:
            state = json.loads(podman("inspect", name).stdout)[0]["State"]
            assert state["Running"], podman("logs", name, check=False).stderr[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        try:
            eventually(ready, timeout=240, interval=1, what="the container's /readyz")
        except AssertionError as exc:
            logs = podman("logs", name, check=False)
            tail = (logs.stdout + logs.stderr)[-4000:]
            raise AssertionError(f"{exc}\ncontainer log:\n{tail}") from None
        yield name, Kube(control_plane.kubeconfig, control_plane.kubectl), api_port
    finally:
        podman("rm", "--force", "--time", "10", name, check=False, timeout=120)
        control_plane.stop()


def test_image_runs_non_root_on_a_read_only_root_and_reconciles_the_examples(
    container: tuple[str, Kube, int],
) -> None:
    name, kube, _ = container
    inspected = json.loads(podman("inspect", name).stdout)[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert podman("exec", name, "id", "-u").stdout.strip() == UID
    refused = podman("exec", name, "touch", "/opt/ferry/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert inspected["Config"]["Entrypoint"] in (["ferry"], "ferry")

    # The examples, less the one reading a secret from Vault (no Vault server here).
    examples = [
        p for p in sorted((REPO / "examples").glob("*.yaml")) if "secretData" not in p.read_text()
    ]
    assert len(examples) >= 4
    kube.kubectl("apply", "--server-side", *(f"--filename={p}" for p in examples))

    def ready(kind: str, ns: str, name: str) -> bool:
        return (condition(get_or_none(kube, kind, name, "-n", ns), "Ready") or {}).get(
            "status"
        ) == "True"

    eventually(
        lambda: ready("configentry", "platform", "payments-api"), timeout=90, what="example Ready"
    )
    eventually(
        lambda: ready("featureflag", "platform", "new-checkout"), timeout=90, what="flag Ready"
    )
    configmap = get_or_none(kube, "configmap", "payments-config", "-n", "payments-prod")
    assert configmap is not None and "DB_POOLSIZE" in json.dumps(configmap["data"])
    # The image's webhooks are in force: the invalid example is refused with its reason.
    refused = kube.kubectl(
        "apply", "--server-side", "-f", str(REPO / "examples" / "invalid"), check=False
    )
    assert refused.returncode != 0
    assert "is greater than the maximum of 100" in refused.stderr
