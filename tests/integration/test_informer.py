"""ferry.adapters.informer on a real API server: only labelled objects reach the operator, and a
watch that has to start over (410 Gone, a dropped stream) loses no deletion.

The label selector is applied by the API server, so an unlabelled ConfigMap is never sent to the
operator at all: that is what keeps its memory following Ferry's objects (decision 0023).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from ferry.adapters.informer import Informer, ObjectKey
from tests.support import Kube

LABELS = {"app.kubernetes.io/managed-by": "ferry"}


class Seen:
    def __init__(self) -> None:
        self.live: dict[ObjectKey, str] = {}
        self.events: list[tuple[str, ObjectKey]] = []

    def __call__(self, event: str, key: ObjectKey, obj: object | None) -> None:
        self.events.append((event, key))
        if event == "DELETED":
            self.live.pop(key, None)
        else:
            assert obj is not None
            self.live[key] = str(obj.metadata.labels)  # type: ignore[attr-defined]


@pytest.fixture
async def client(kube: Kube) -> AsyncIterator[AsyncClient]:
    found = AsyncClient(KubeConfig.from_file(str(kube.kubeconfig)))
    try:
        yield found
    finally:
        await found.close()


async def until(check: object, what: str, timeout: float = 20) -> None:
    async def wait() -> None:
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def configmap(ns: str, name: str, labelled: bool) -> ConfigMap:
    labels = dict(LABELS) if labelled else {}
    return ConfigMap(metadata=ObjectMeta(name=name, namespace=ns, labels=labels), data={"k": "v"})


async def test_only_labelled_objects_arrive_and_deletions_survive_a_restarted_watch(
    kube: Kube, client: AsyncClient
) -> None:
    ns = kube.namespace("informer")
    await client.create(configmap(ns, "before", labelled=True))
    await client.create(configmap(ns, "noise-before", labelled=False))
    seen = Seen()
    informer = Informer(client, ConfigMap, LABELS, seen)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert (ns, "before") in seen.live  # the first list
        await client.create(configmap(ns, "after", labelled=True))
        await client.create(configmap(ns, "noise-after", labelled=False))
        await until(lambda: (ns, "after") in seen.live, "the labelled create")

        # The watch is cut; meanwhile one object goes. The next list must say so.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.delete(ConfigMap, "before", namespace=ns)
        task = asyncio.create_task(informer.run())
        await until(lambda: (ns, "before") not in seen.live, "the deletion seen by the relist")
        assert ("DELETED", (ns, "before")) in seen.events

        # Removing the label takes an object out of the selection: told as a deletion.
        await client.patch(
            ConfigMap, "after", {"metadata": {"labels": {LABELS_KEY: None}}}, namespace=ns
        )
        await until(lambda: (ns, "after") not in seen.live, "the unlabelled object dropped")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ours = {key for _, key in seen.events if key[0] == ns}
    assert ours == {(ns, "before"), (ns, "after")}  # the unlabelled ones never arrived


LABELS_KEY = next(iter(LABELS))


async def test_an_object_the_consumer_cannot_take_is_skipped_not_fatal(
    kube: Kube, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One object whose handling fails (in the first list, then again as a watch event) is
    logged without its content and skipped; the list completes (``synced``) and later events of
    other objects still arrive: one odd object must not stop an index for everyone."""
    ns = kube.namespace("informer-odd")
    await client.create(configmap(ns, "odd", labelled=True))
    await client.create(configmap(ns, "fine", labelled=True))
    seen = Seen()

    def fussy(event: str, key: ObjectKey, obj: object | None) -> None:
        if key == (ns, "odd"):
            raise UnicodeDecodeError("utf-8", b"secret-bytes", 0, 1, "invalid start byte")
        seen(event, key, obj)

    informer = Informer(client, ConfigMap, LABELS, fussy)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert (ns, "fine") in seen.live and (ns, "odd") not in seen.live
        await client.patch(ConfigMap, "odd", {"data": {"k": "w"}}, namespace=ns)
        await client.create(configmap(ns, "later", labelled=True))
        await until(lambda: (ns, "later") in seen.live, "an event after the failing one")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    skipped = [r.getMessage() for r in caplog.records if "could not be indexed" in r.getMessage()]
    assert len(skipped) == 2 and all(f"{ns}/odd" in m for m in skipped), skipped
    assert not any("secret-bytes" in r.getMessage() for r in caplog.records)
