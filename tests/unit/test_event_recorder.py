"""EventRecorder (ferry.adapters.events): Events recorded without waiting, written in order by
one writer, the overflow dropped and counted, the queue sent at close, held back while
reconciles wait.

The sink stands in for the API server's ``create``: what is tested is the queue's behaviour,
which no API server can make deterministic (how fast it answers). Events reaching a real API
server are covered by the integration tests (``RevisionRecorded`` in test_entries.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

import ferry.metrics  # noqa: F401 - registers ferry_events_dropped_total
from ferry.adapters.events import EventRecorder

INVOLVED = {"kind": "ConfigEntry", "name": "api", "namespace": "payments", "uid": "u-1"}


class Sink:
    """Takes ``create(event)`` calls; holds each until ``open`` is set."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.open = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def create(self, event: Any) -> Any:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.open.wait()
        self.in_flight -= 1
        self.written.append(event.message)
        return event


def dropped() -> float:
    return REGISTRY.get_sample_value("ferry_events_dropped_total") or 0.0


async def test_events_are_written_in_order_by_one_writer_and_sent_at_close() -> None:
    sink = Sink()
    recorder = EventRecorder(sink, max_queued=10)  # type: ignore[arg-type]
    for i in range(5):
        recorder.record(INVOLVED, type="Normal", reason="RevisionRecorded", message=f"m{i}")
    await asyncio.sleep(0.01)
    assert sink.written == [] and sink.most_in_flight == 1  # record() returned without waiting
    sink.open.set()
    await recorder.close()
    assert sink.written == [f"m{i}" for i in range(5)]
    assert sink.most_in_flight == 1


async def test_events_past_the_queue_limit_are_dropped_and_counted() -> None:
    sink = Sink()
    recorder = EventRecorder(sink, max_queued=3)  # type: ignore[arg-type]
    before = dropped()
    recorder.record(INVOLVED, type="Normal", reason="R", message="first")
    await asyncio.sleep(0.01)  # the writer holds "first"; three more fit in the queue
    for i in range(6):
        recorder.record(INVOLVED, type="Normal", reason="R", message=f"m{i}")
    assert dropped() - before == 3
    sink.open.set()
    await recorder.close()
    assert sink.written == ["first", "m0", "m1", "m2"]


async def test_a_failing_write_does_not_stop_the_writer() -> None:
    class Failing(Sink):
        async def create(self, event: Any) -> Any:
            if event.message == "bad":
                import httpx2

                raise httpx2.ConnectError("refused")
            return await super().create(event)

    sink = Failing()
    sink.open.set()
    recorder = EventRecorder(sink, max_queued=10)  # type: ignore[arg-type]
    for message in ("a", "bad", "b"):
        recorder.record(INVOLVED, type="Warning", reason="R", message=message)
    await recorder.close()
    assert sink.written == ["a", "b"]


async def test_while_reconciles_wait_events_trickle_and_the_rest_go_when_the_queue_empties() -> (
    None
):
    sink = Sink()
    sink.open.set()
    busy = True
    recorder = EventRecorder(sink, busy_interval=60)  # type: ignore[arg-type]
    recorder.busy = lambda: busy
    for i in range(3):
        recorder.record(INVOLVED, type="Normal", reason="RevisionRecorded", message=f"m{i}")
    async with asyncio.timeout(5):
        while not sink.written:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert sink.written == ["m0"]  # the first goes at once; the next waits behind the work
    busy = False  # the work queue is empty: what waited goes now, in order
    async with asyncio.timeout(5):
        while len(sink.written) < 3:
            await asyncio.sleep(0.01)
    assert sink.written == ["m0", "m1", "m2"]
    await recorder.close()


async def test_close_sends_what_waits_even_while_reconciles_wait() -> None:
    sink = Sink()
    sink.open.set()
    recorder = EventRecorder(sink, busy_interval=60)  # type: ignore[arg-type]
    recorder.busy = lambda: True
    for i in range(3):
        recorder.record(INVOLVED, type="Normal", reason="RevisionRecorded", message=f"m{i}")
    await recorder.close(flush_seconds=5)
    assert sink.written == ["m0", "m1", "m2"]
