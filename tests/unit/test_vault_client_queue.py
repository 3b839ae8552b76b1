"""How VaultClient runs hvac calls (ferry.adapters.vault): what the timeout measures, how long a
request may wait for a connection and what that is called, login and renewal never queued behind
reads, lanes taking turns, and hvac's 404 never leaving as a raw exception.

The calls here stand in for hvac's: sleeps on the client's threads. Vault's own answers are
tested against a real server (tests/integration/test_vault_adapter.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import hvac.exceptions
import pytest

from ferry.adapters.vault import TokenAuth, VaultClient, VaultConfig, VaultError, VaultUnavailable
from ferry.slots import FairSlots

ADDRESS = "http://127.0.0.1:9"  # never connected to: every call here is a stand-in


@pytest.fixture
def make_client() -> Iterator[Any]:
    made: list[VaultClient] = []

    def make(**settings: Any) -> VaultClient:
        client = VaultClient(VaultConfig(ADDRESS, TokenAuth("t0ken-never-shown"), **settings))
        made.append(client)
        return client

    yield make
    for client in made:
        client._executor.shutdown(wait=True)


def sleeping(seconds: float, running: list[int] | None = None) -> Any:
    """A stand-in for an hvac call that takes ``seconds``, counting calls running at once."""
    lock = threading.Lock()

    def call() -> str:
        if running is not None:
            with lock:
                running[0] += 1
                running[1] = max(running[1], running[0])
        time.sleep(seconds)
        if running is not None:
            with lock:
                running[0] -= 1
        return "done"

    return call


async def test_the_timeout_counts_from_the_start_of_the_request_not_from_the_queue(
    make_client: Any,
) -> None:
    client = make_client(timeout=1.0, max_concurrency=1)  # a request may take 2 * 1 + 1 s
    first = client._run(sleeping(2.0), what="reading a")
    second = client._run(sleeping(1.5), what="reading b")  # queued 2 s, then runs 1.5 s
    assert await asyncio.gather(first, second) == ["done", "done"]


async def test_a_request_that_really_takes_too_long_is_still_a_timeout(make_client: Any) -> None:
    client = make_client(timeout=0.1, max_concurrency=1)  # 1.2 s
    with pytest.raises(VaultUnavailable) as slow:
        await client._run(sleeping(1.6), what="reading a")
    assert slow.value.reason == "VaultTimeout"


async def test_a_queue_that_does_not_move_is_busy_not_a_slow_vault(make_client: Any) -> None:
    client = make_client(timeout=5, max_concurrency=1, queue_timeout=0.3)
    running = asyncio.ensure_future(client._run(sleeping(3.0), what="reading a"))
    await asyncio.sleep(0.05)
    with pytest.raises(VaultUnavailable) as busy:
        await client._run(sleeping(0), what='reading "team-b/db"')
    assert not running.done()  # refused after the queue's bound, not once the slot came free
    assert busy.value.reason == "VaultBusy" and busy.value.retryable
    message = str(busy.value)
    assert "could start within 0.3s" in message and "Vault was not asked" in message
    assert '"team-b/db"' in message and "did not answer" not in message
    assert "t0ken" not in message
    assert await running == "done"


async def test_a_slot_is_held_until_vault_answers_even_if_the_caller_gave_up(
    make_client: Any,
) -> None:
    client = make_client(timeout=0.05, max_concurrency=2)  # 1.1 s per request
    running = [0, 0]
    calls = [client._run(sleeping(1.4, running), what=f"reading {i}") for i in range(5)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert any(isinstance(o, VaultUnavailable) for o in outcomes)  # some timed out...
    assert running[1] <= 2  # ...yet never more requests at Vault than max_concurrency


async def test_login_and_renewal_are_not_queued_behind_reads(make_client: Any) -> None:
    client = make_client(timeout=5, max_concurrency=2)
    answered = threading.Event()

    def lookup_self() -> dict[str, Any]:
        answered.set()
        return {"data": {"accessor": "a", "ttl": 0, "renewable": False}}

    client._hvac.auth.token.lookup_self = lookup_self
    reads = [client._run(sleeping(2.0), what=f"reading {i}") for i in range(4)]
    flood = asyncio.ensure_future(asyncio.gather(*reads))
    await asyncio.sleep(0.05)  # every read slot taken, two more reads waiting
    info = await client.login()
    assert answered.is_set() and not flood.done()  # answered while every read slot was held
    assert info.accessor == "a"
    flood.cancel()
    await asyncio.gather(flood, return_exceptions=True)


async def test_hvacs_404_never_leaves_the_client_raw(make_client: Any) -> None:
    client = make_client()

    def not_there() -> None:
        raise hvac.exceptions.InvalidPath(
            errors=['no handler for route "auth/token/renew-self"'], method="POST", url="u"
        )

    with pytest.raises(VaultError) as refused:
        await client._run(not_there, what="renewing the Vault token")
    assert not isinstance(refused.value, hvac.exceptions.VaultError)
    assert refused.value.reason == "VaultRequestInvalid"
    assert str(refused.value) == (
        f"Vault at {ADDRESS} has no endpoint for renewing the Vault token: "
        'no handler for route "auth/token/renew-self"'
    )


async def test_lanes_take_turns_for_slots() -> None:
    slots, order = FairSlots(1, per_tenant=1), []
    await slots.acquire("busy", 1)  # the one slot, taken

    async def wait(lane: str, n: int) -> None:
        await slots.acquire(lane, 5)
        order.append(f"{lane}{n}")
        slots.release(lane)

    waiters = [asyncio.ensure_future(wait("busy", n)) for n in range(4)]
    await asyncio.sleep(0)
    waiters += [asyncio.ensure_future(wait("quiet", n)) for n in range(2)]
    await asyncio.sleep(0)
    slots.release("busy")
    await asyncio.gather(*waiters)
    assert order == ["busy0", "quiet0", "busy1", "quiet1", "busy2", "busy3"]


async def test_a_waiter_that_gives_up_leaves_no_trace() -> None:
    slots = FairSlots(1, per_tenant=1)
    await slots.acquire("", 1)
    with pytest.raises(TimeoutError):
        await slots.acquire("a", 0.05)
    assert not slots.waiting
    slots.release("")
    await asyncio.wait_for(slots.acquire("b", 1), 0.5)  # the slot is free again, at once
