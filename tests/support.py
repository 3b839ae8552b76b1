"""Small helpers shared by the tests (no mocks: the integration helpers drive the real servers)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

#: The ConfigSchema most tests validate against (as in examples/: db.poolSize 1..100).
PAYMENTS = {
    "type": "object",
    "required": ["db"],
    "properties": {
        "db": {
            "type": "object",
            "properties": {
                "poolSize": {"type": "integer", "minimum": 1, "maximum": 100},
                "host": {"type": "string"},
            },
        }
    },
}


@dataclass(frozen=True)
class Kube:
    kubeconfig: Path
    kubectl_path: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(
        self, *objects: dict[str, Any], check: bool = True, manager: str = "kubectl"
    ) -> subprocess.CompletedProcess[str]:
        """Server-side apply, as GitOps tools do. (Client-side `kubectl apply` treats a null in
        the data as "delete this field", so nulls never reach the server that way.)"""
        return self.kubectl(
            "apply",
            "--server-side",
            f"--field-manager={manager}",
            "-f",
            "-",
            input=yaml.safe_dump_all(objects),
            check=check,
        )

    def create(
        self, *objects: dict[str, Any], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(objects), check=check)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def namespace(self, prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels or {}},
            }
        )
        return name


def eventually(
    probe: Callable[[], T | None],
    *,
    timeout: float = 30,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def manifest(
    kind: str, name: str, namespace: str, spec: dict[str, Any], **meta: Any
) -> dict[str, Any]:
    """A Ferry custom resource as a user would write it."""
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": spec,
    }


def entry(name: str, namespace: str, spec: Any, **meta: Any) -> dict[str, Any]:
    return manifest("ConfigEntry", name, namespace, spec, **meta)


def schema(name: str, namespace: str, body: Any, compatibility: str = "Backward") -> dict[str, Any]:
    return manifest(
        "ConfigSchema", name, namespace, {"schema": body, "compatibility": compatibility}
    )


def flag(name: str, namespace: str, spec: Any) -> dict[str, Any]:
    return manifest("FeatureFlag", name, namespace, spec)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def get_or_none(kube: Kube, *args: str) -> Any:
    result = kube.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)
