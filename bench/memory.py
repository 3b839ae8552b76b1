"""Does the operator's memory follow Ferry's objects, or the cluster's size? (issue 15)

    .venv/bin/python bench/memory.py [--entries 200] [--configmaps 50000] [--deployments 5000]

Starts its own kube-apiserver + etcd, PostgreSQL and Redis, creates ``entries`` ConfigEntries,
then runs the operator twice over them, each time until ready and every entry reconciled, then
5 s more, and reads its resident memory (VmRSS, and the peak VmHWM):

1. floor: the cluster holds only the entries (and what Ferry wrote for them);
2. the same, after ``configmaps`` unrelated ConfigMaps and ``deployments`` unrelated Deployments
   (no Ferry label or annotation) were added.

Goal: the second run's RSS under 10 MiB above the first's. Nothing else should change between
the runs: the same entries, already reconciled (the second run writes nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from floors import each_at_once
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace
from reconcile_bench import reconciled

from ferry.devenv.process import Process
from ferry.devenv.stack import Stack, start_operator, start_stack

ConfigEntry = create_namespaced_resource("ferry.dev", "v1alpha1", "ConfigEntry", "configentries")
GOAL_MIB = 10.0
PARALLEL = 16
PER_NAMESPACE = 1000


def memory_kb(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def run_operator(stack: Stack, entries: int) -> dict[str, int]:
    """Start the operator, wait until every entry was reconciled, settle, measure, stop."""
    operator: Process = start_operator(stack, timeout=1200)
    stack.processes.append(operator)
    try:
        deadline = time.monotonic() + 1200
        while reconciled(stack.extra["FERRY_API_URL"]) < entries:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {entries} entries reconciled")
            time.sleep(0.2)
        time.sleep(5)
        return memory_kb(operator.pid)
    finally:
        operator.stop()


def create_all(client: Client, objects: list[object]) -> float:
    async def create(api: AsyncClient, obj: object) -> None:
        await api.create(obj)

    start = time.perf_counter()
    each_at_once(client, objects, create, PARALLEL)
    return time.perf_counter() - start


def namespaces(client: Client, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    for name in names:
        client.create(Namespace(metadata=ObjectMeta(name=name)))
    return names


def unrelated_configmaps(client: Client, count: int) -> float:
    spaces = namespaces(client, "noise-cm", -(-count // PER_NAMESPACE))
    objects: list[object] = [
        ConfigMap(
            metadata=ObjectMeta(name=f"cm-{i:05d}", namespace=spaces[i // PER_NAMESPACE]),
            data={"app.properties": f"key={i}\nother=value\n"},
        )
        for i in range(count)
    ]
    return create_all(client, objects)


def unrelated_deployments(client: Client, count: int) -> float:
    spaces = namespaces(client, "noise-deploy", -(-count // PER_NAMESPACE))
    objects: list[object] = []
    for i in range(count):
        labels = {"app": f"d-{i}"}
        template = PodTemplateSpec(
            metadata=ObjectMeta(labels=labels),
            spec=PodSpec(containers=[Container(name="app", image="example.invalid/app:1")]),
        )
        objects.append(
            Deployment(
                metadata=ObjectMeta(name=f"d-{i:05d}", namespace=spaces[i // PER_NAMESPACE]),
                spec=DeploymentSpec(
                    replicas=0, selector=LabelSelector(matchLabels=labels), template=template
                ),
            )
        )
    return create_all(client, objects)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--configmaps", type=int, default=50000)
    parser.add_argument("--deployments", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-bench-memory-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            client = Client(KubeConfig.from_file(str(stack.kubeconfig)), field_manager="bench")
            client.create(Namespace(metadata=ObjectMeta(name="bench-memory")))
            for i in range(args.entries):
                spec = {"data": {"i": i, "name": f"entry-{i}"}}
                client.create(
                    ConfigEntry(
                        metadata=ObjectMeta(name=f"e-{i:05d}", namespace="bench-memory"),
                        spec=spec,
                    )
                )
            first = run_operator(stack, args.entries)  # writes the ConfigMaps
            floor = run_operator(stack, args.entries)  # the same picture, nothing to write
            took_cm = unrelated_configmaps(client, args.configmaps)
            took_deploy = unrelated_deployments(client, args.deployments)
            crowded = run_operator(stack, args.entries)
        finally:
            stack.stop()
    grown = (crowded["VmRSS"] - floor["VmRSS"]) / 1024
    print(f"memory: {args.entries} entries; operator RSS once ready and every entry reconciled")
    print(
        f"  first start (writes the ConfigMaps): RSS {first['VmRSS'] / 1024:.0f} MiB, "
        f"peak {first['VmHWM'] / 1024:.0f} MiB"
    )
    print(
        f"  floor, restart over the same cluster: RSS {floor['VmRSS'] / 1024:.0f} MiB, "
        f"peak {floor['VmHWM'] / 1024:.0f} MiB"
    )
    print(
        f"  with {args.configmaps} unrelated ConfigMaps (created in {took_cm:.0f} s) and "
        f"{args.deployments} unrelated Deployments ({took_deploy:.0f} s): RSS "
        f"{crowded['VmRSS'] / 1024:.0f} MiB, peak {crowded['VmHWM'] / 1024:.0f} MiB"
    )
    verdict = "met" if grown < GOAL_MIB else "NOT met"
    print(f"  RSS grew by {grown:.1f} MiB (goal < {GOAL_MIB:g} MiB): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
