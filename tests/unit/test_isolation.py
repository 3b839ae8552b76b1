"""Validation in worker processes (ferry.reconcile.isolation): the pure functions' own answers,
a hard limit per call, killed and replaced workers, and turns between namespaces.

These start real worker processes (a plain ``python``), as the operator does.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ferry.domain import admission
from ferry.domain.entry import plan_entry as pure_plan_entry
from ferry.domain.errors import Invalid, Violation
from ferry.domain.jsonschema import TOO_COSTLY, check_schema, is_too_costly
from ferry.reconcile import isolation
from ferry.reconcile.isolation import Isolation, _Answers, _plain
from ferry.slots import FairSlots
from tests.hostile_inputs import COSTLY_SCHEMA, costly_data

COSTLY_DATA = costly_data()
LIMIT = 1.0


class Counted(Mapping[str, Mapping[str, Any]]):
    """A namespace's specs as the index views are: looked up by name; records what was read."""

    def __init__(self, specs: dict[str, Mapping[str, Any]]) -> None:
        self.specs, self.read = specs, set[str]()

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        self.read.add(name)
        return self.specs[name]

    def __iter__(self) -> Iterator[str]:
        self.read.add("*")
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


@pytest.fixture
async def pool() -> AsyncIterator[Isolation]:
    pool = Isolation(workers=2, timeout_seconds=LIMIT)
    pool.start()
    try:
        yield pool
    finally:
        await pool.close()


def test_the_costly_schema_is_within_budget_so_only_a_limit_per_call_stops_it() -> None:
    assert check_schema(COSTLY_SCHEMA) == []


async def test_answers_are_the_pure_functions_own(pool: Isolation) -> None:
    entries = Counted(
        {
            "base": {"inherits": [{"name": "root"}], "data": {"db": {"host": "a"}}},
            "root": {"data": {"db": {"poolSize": 5}}},
            "unrelated": {"data": {"x": 1}},
        }
    )
    schemas = Counted({"s": {"schema": {"type": "object"}}, "other": {"schema": {}}})
    spec = {"schemaRef": {"name": "s"}, "inherits": [{"name": "base"}], "data": {"a": 1}}

    plan = await isolation.plan_entry(
        "e", spec, entries=entries, schemas=schemas, namespace="ns", pool=pool
    )

    assert plan == pure_plan_entry("e", spec, entries=entries.specs, schemas=schemas.specs)
    # Only what resolving the entry reads was looked up (and sent): never the whole namespace.
    assert entries.read == {"base", "root"} and schemas.read == {"s"}

    bad = {"schemaRef": {"name": "s"}, "data": {"n": "five"}}
    strict = {"s": {"schema": {"properties": {"n": {"type": "integer"}}}}}
    with pytest.raises(Invalid) as raised:
        await isolation.plan_entry("e", bad, entries={}, schemas=strict, namespace="ns", pool=pool)
    with pytest.raises(Invalid) as expected:
        pure_plan_entry("e", bad, entries={}, schemas=strict)
    assert (raised.value.reason, raised.value.violations) == (
        expected.value.reason,
        expected.value.violations,
    )

    assert await isolation.check_schema({"type": 5}, tenant="ns", pool=pool) == check_schema(
        {"type": 5}
    )
    assert await isolation.check_entry("ns", "e", bad, {}, strict, pool=pool) == (
        admission.check_entry("ns", "e", bad, {}, strict)
    )


async def test_the_compatibility_check_gets_every_user_and_its_bases(pool: Isolation) -> None:
    old = {"schema": {"type": "object"}}
    new = {"schema": {"properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}}
    entries = {
        "base": {"data": {"db": {"poolSize": 50}}},
        "user": {"schemaRef": {"name": "s"}, "inherits": [{"name": "base"}], "data": {}},
        "fine": {"schemaRef": {"name": "s"}, "data": {"db": {"poolSize": 1}}},
        "elsewhere": {"schemaRef": {"name": "t"}, "data": {}},
    }
    found = await isolation.check_schema_request("UPDATE", "ns", "s", new, old, entries, pool=pool)
    assert found == admission.check_schema_request(
        "UPDATE", "ns", "s", new, old, entries, {"s": old}
    )
    assert [v.message.split(" (")[0] for v in found] == ['would make ConfigEntry "user" invalid']


async def test_a_call_over_the_limit_is_too_costly_naming_the_schema_and_its_worker_replaced(
    pool: Isolation,
) -> None:
    spec = {"schemaRef": {"name": "costly"}, "data": COSTLY_DATA}
    schemas = {"costly": {"schema": COSTLY_SCHEMA}}
    first = [w.process.pid for w in pool._all]

    with pytest.raises(Invalid) as raised:
        await isolation.plan_entry("e", spec, entries={}, schemas=schemas, namespace="a", pool=pool)

    assert raised.value.reason == TOO_COSTLY
    [violation] = raised.value.violations
    assert violation.path == "spec.schemaRef.name"
    assert violation.message.startswith(f'ConfigSchema "costly": {TOO_COSTLY}: ')
    assert f"longer than {LIMIT:g}s" in violation.message
    assert pool.killed == 1
    # The pool is whole again, with a new process in place of the killed one, and answers.
    plan = await isolation.plan_entry("e", {"data": {}}, entries={}, schemas={}, pool=pool)
    assert plan.data == {}
    await asyncio.wait_for(pool.settled(), 60)
    assert len(pool._all) == 2 and sorted(w.process.pid for w in pool._all) != sorted(first)

    # The admission form says the same, as a violation.
    [denial] = await isolation.check_entry("a", "e", spec, {}, schemas, pool=pool)
    assert denial == violation and pool.killed == 2
    # The same input again (a resync, a retried request) is answered from the verdict, without
    # spending the time again.
    assert await isolation.check_entry("a", "e", spec, {}, schemas, pool=pool) == [violation]
    with pytest.raises(Invalid):
        await isolation.plan_entry("e", spec, entries={}, schemas=schemas, namespace="a", pool=pool)
    assert pool.killed == 2


async def test_a_costly_schema_check_is_bounded_too(pool: Isolation) -> None:
    # 20,000 properties (600 KB): checking it against its meta-schema alone takes seconds, before
    # the budget even counts its subschemas.
    huge = {"properties": {f"p{i}": {"type": "string", "maxLength": i} for i in range(20_000)}}
    [violation] = await isolation.check_schema(huge, tenant="a", name="huge", pool=pool)
    assert violation.path == "spec.schema" and is_too_costly(violation)
    assert 'checking ConfigSchema "huge" took longer than' in violation.message


async def test_another_namespace_is_served_while_one_floods_the_pool(pool: Isolation) -> None:
    """Order, not timing: the bystander is answered before the flooding namespace's second call
    even starts, because that namespace may hold only one of the two workers."""
    done: list[str] = []

    async def attack(i: int) -> None:
        data = {"schemaRef": {"name": "costly"}, "data": {**COSTLY_DATA, "n": i}}
        violations = await isolation.check_entry(
            "attacker", "e", data, {}, {"costly": {"schema": COSTLY_SCHEMA}}, pool=pool
        )
        assert [is_too_costly_named(v) for v in violations] == [True]
        done.append(f"attack {i}")

    async def bystander() -> None:
        await asyncio.sleep(0.2)  # the attack is under way
        plan = await isolation.plan_entry(
            "e", {"data": {"ok": True}}, entries={}, schemas={}, namespace="bystander", pool=pool
        )
        assert plan.data == {"ok": True}
        done.append("bystander")

    await asyncio.gather(attack(1), attack(2), attack(3), bystander())

    assert done == ["bystander", "attack 1", "attack 2", "attack 3"]
    assert pool.killed == 3


def is_too_costly_named(violation: Violation) -> bool:
    return violation.message.startswith(f'ConfigSchema "costly": {TOO_COSTLY}: ')


async def test_a_caller_with_a_deadline_is_told_busy_instead_of_waiting(pool: Isolation) -> None:
    costly = {"schemaRef": {"name": "costly"}, "data": COSTLY_DATA}
    schemas = {"costly": {"schema": COSTLY_SCHEMA}}
    running = asyncio.ensure_future(
        isolation.check_entry("attacker", "e", costly, {}, schemas, pool=pool)
    )
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    # The namespace's one worker is taken: its next call may not wait past its deadline.
    [busy] = await isolation.check_entry(
        "attacker", "f", {"data": {}}, {}, {}, deadline=loop.time() + 0.2, pool=pool
    )
    assert busy.path == "spec" and "validation workers are busy" in busy.message
    await running


async def test_a_worker_that_dies_is_reported_and_replaced() -> None:
    # A "worker" that says it is ready and then exits, as one killed by the kernel would.
    script = "import sys; sys.stdout.buffer.write(bytes(4)); sys.stdout.flush()"
    pool = Isolation(workers=1, timeout_seconds=LIMIT, command=(sys.executable, "-c", script))
    try:
        [violation] = await isolation.check_schema({}, tenant="a", pool=pool)
        assert violation == Violation(
            "spec.schema", f"{TOO_COSTLY}: the validation worker died while checking the schema"
        )
        assert pool.killed == 1
    finally:
        await pool.close()


async def test_workers_outlive_a_signal_to_the_operators_group_and_stop_at_eof() -> None:
    """Ctrl-C or a SIGTERM to the process group reaches the workers too; they leave stopping to
    the operator (else reconciles in flight would call healthy entries too costly), and end when
    it closes their pipe."""
    pool = Isolation(workers=1, timeout_seconds=LIMIT)
    pool.start()
    try:
        await pool.settled()
        [worker] = pool._all
        for sent in (signal.SIGINT, signal.SIGTERM):
            os.kill(worker.process.pid, sent)
        await asyncio.sleep(0.2)
        assert worker.process.returncode is None
        assert await isolation.check_schema({"type": "object"}, tenant="a", pool=pool) == []
    finally:
        await pool.close()
    assert worker.process.returncode is not None


def test_a_workers_answer_may_hold_only_what_answers_are_made_of() -> None:
    import io

    allowed = pickle.dumps(("invalid", "R", [Violation("spec", "m")]))
    assert _Answers(io.BytesIO(allowed)).load() == ("invalid", "R", [Violation("spec", "m")])
    with pytest.raises(pickle.UnpicklingError, match="answer may not hold"):
        _Answers(io.BytesIO(pickle.dumps(("ok", __import__("os").system)))).load()


async def test_slots_take_turns_between_tenants_and_cap_each() -> None:
    slots = FairSlots(size=1, per_tenant=1)
    order: list[str] = []

    async def use(tenant: str, label: str) -> None:
        await slots.acquire(tenant, None)
        order.append(label)
        await asyncio.sleep(0)
        slots.release(tenant)

    await slots.acquire("a", None)  # a holds the only slot; then a, a and b queue up
    tasks = [asyncio.ensure_future(use(*x)) for x in (("a", "a2"), ("a", "a3"), ("b", "b1"))]
    await asyncio.sleep(0)
    slots.release("a")
    await asyncio.gather(*tasks)
    assert order == ["a2", "b1", "a3"]

    capped = FairSlots(size=3, per_tenant=2)
    await capped.acquire("a", None)
    await capped.acquire("a", None)
    with pytest.raises(TimeoutError):
        await capped.acquire("a", 0.05)  # a third for "a" waits although a slot is free
    await capped.acquire("b", 0.05)  # which "b" gets at once
    assert capped.free == 0 and not capped.waiting


async def test_data_nested_past_what_pickle_takes_is_answered_the_same(pool: Isolation) -> None:
    deep: Any = 1
    for _ in range(1500):
        deep = {"a": deep}
    spec = {"data": deep}
    assert await isolation.check_entry("ns", "e", spec, {}, {}, pool=pool) == (
        admission.check_entry("ns", "e", spec, {}, {})
    )
    [violation] = await isolation.check_schema({"properties": deep}, tenant="ns", pool=pool)
    assert violation == check_schema({"properties": deep})[0]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(JSON)
def test_what_is_sent_to_a_worker_is_the_value_given_as_plain_json(value: Any) -> None:
    """Index views and Kopf bodies are Mappings of their own; tuples are lists to JSON: what a
    worker receives must still be the same value, as plain dicts and lists."""
    assert _plain(value) == value
    sent = _plain(MappingProxyType({"v": value, "t": (value, MappingProxyType({"v": value}))}))
    assert sent == {"v": value, "t": [value, {"v": value}]}
    assert type(sent) is dict and type(sent["t"]) is list and type(sent["t"][1]) is dict


def test_an_unchanged_question_finds_its_plan_and_any_change_asks_again() -> None:
    memo = isolation.PlanMemo(size=2)
    plan = pure_plan_entry("e", {"data": {"a": 1}}, entries={}, schemas={})
    question = ({"data": {"a": 1}}, {}, {}, ())
    memo.put(("ns", "e"), question, plan)
    assert memo.get(("ns", "e"), ({"data": {"a": 1}}, {}, {}, ())) is plan  # equal by value
    assert memo.get(("ns", "e"), ({"data": {"a": 2}}, {}, {}, ())) is None  # the spec changed
    assert memo.get(("ns", "e"), ({"data": {"a": 1}}, {"base": {}}, {}, ())) is None  # a base
    assert memo.get(("ns", "e"), ({"data": {"a": 1}}, {}, {}, ("p",))) is None  # Vault paths
    memo.put(("ns", "f"), question, plan)
    memo.put(("ns", "g"), question, plan)  # over the size: the least recently used goes
    assert memo.get(("ns", "e"), question) is None
    assert memo.get(("ns", "g"), question) is plan


# ----------------------------------------------- inline checks (admission), plans (reconcile)
async def test_cheap_checks_are_answered_inline_with_the_workers_answers(pool: Isolation) -> None:
    """The admission pool answers a small entry against a flat schema on its own thread; the
    answer is the worker's, word for word. Anything that may cost more still goes to a worker.
    ``ferry_entry_checks_total`` counts where each ran, by pool."""
    inline = isolation.Inline()
    inline_pool = Isolation(workers=1, timeout_seconds=LIMIT, inline=inline, name="admission")

    def counted(where: str) -> float:
        labels = {"pool": "admission", "where": where}
        return REGISTRY.get_sample_value("ferry_entry_checks_total", labels) or 0.0

    before = {where: counted(where) for where in ("inline", "worker")}
    strict = {"s": {"schema": {"properties": {"n": {"type": "integer", "maximum": 3}}}}}
    bases = {"base": {"data": {"n": 2}}}
    cases = [
        {"schemaRef": {"name": "s"}, "data": {"n": 5}},
        {"schemaRef": {"name": "s"}, "inherits": [{"name": "base"}], "data": {"m": "x"}},
        {"schemaRef": {"name": "missing"}, "data": {}},
        {"data": {"a": 1}, "target": {"name": "Not_A_Name", "format": "env"}},
    ]
    try:
        for spec in cases:
            assert await isolation.check_entry(
                "ns", "e", spec, bases, strict, pool=inline_pool
            ) == await isolation.check_entry("ns", "e", spec, bases, strict, pool=pool)
        assert inline.used("ns") > 0

        costly = {"schemaRef": {"name": "costly"}, "data": COSTLY_DATA}
        [violation] = await isolation.check_entry(
            "attacker", "e", costly, {}, {"costly": {"schema": COSTLY_SCHEMA}}, pool=inline_pool
        )
        assert is_too_costly_named(violation) and inline_pool.killed == 1
        assert inline.used("attacker") == 0
        assert counted("inline") - before["inline"] == len(cases)
        assert counted("worker") - before["worker"] == 1
    finally:
        await inline_pool.close()


async def test_cheap_plans_are_made_inline_with_the_workers_plans(pool: Isolation) -> None:
    """The reconcilers' pool plans a small entry on its own thread: the worker's plan, or the
    worker's ``Invalid``, and a plan that shares nothing with the index it was read from."""
    inline = isolation.Inline()
    inline_pool = Isolation(workers=1, timeout_seconds=LIMIT, inline=inline)
    strict = {"s": {"schema": {"properties": {"n": {"type": "integer", "maximum": 3}}}}}
    entries = {"base": {"data": {"n": 2, "nested": {"k": "v"}}}}
    good = {"schemaRef": {"name": "s"}, "inherits": [{"name": "base"}], "data": {"m": "x"}}
    bad = {"schemaRef": {"name": "s"}, "data": {"n": 5}}

    async def plan(spec: Mapping[str, Any], on: Isolation) -> Any:
        return await isolation.plan_entry(
            "e", spec, entries=entries, schemas=strict, namespace="ns", pool=on
        )

    try:
        made = await plan(good, inline_pool)
        assert made == await plan(good, pool) and inline.used("ns") > 0
        assert inline_pool.killed == 0 and not inline_pool._all  # no worker was started
        made.data["nested"]["k"] = "changed"  # the plan's data is its own
        assert entries["base"]["data"]["nested"] == {"k": "v"}
        with pytest.raises(Invalid) as inline_error:
            await plan(bad, inline_pool)
        with pytest.raises(Invalid) as worker_error:
            await plan(bad, pool)
        assert inline_error.value.violations == worker_error.value.violations

        costly = {"schemaRef": {"name": "costly"}, "data": COSTLY_DATA}
        with pytest.raises(Invalid) as too_costly:
            await isolation.plan_entry(
                "e",
                costly,
                entries={},
                schemas={"costly": {"schema": COSTLY_SCHEMA}},
                namespace="attacker",
                pool=inline_pool,
            )
        assert too_costly.value.reason == TOO_COSTLY and inline_pool.killed == 1
        assert inline.used("attacker") == 0
    finally:
        await inline_pool.close()


def test_a_namespace_past_its_inline_share_waits_for_the_next_second() -> None:
    now = [100.0]
    inline = isolation.Inline(share=0.05, clock=lambda: now[0])
    inline.spend("greedy", 0.06)
    assert not inline.allows("greedy") and inline.allows("modest")
    now[0] += 1.0
    assert inline.allows("greedy") and inline.used("greedy") == 0
