"""Admission webhooks through the real API server: what `kubectl` shows when it refuses, what it
stores when it accepts, who the revision history says made the change, and hostile input that
must be answered (allowed or denied) within the webhook's timeout, never with an error.

The operator requires the API server's client certificate here (as a hardened installation
does), so every request below went through kube-apiserver's webhook client identity; what a
caller without it gets is in test_webhook_trust.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightkube import AsyncClient, KubeConfig

from ferry.domain import kinds
from ferry.reconcile.isolation import Isolation
from ferry.reconcile.world import Snapshot, World
from ferry.settings import VaultSettings
from ferry.webhooks.configurations import TIMEOUT_SECONDS, VALIDATE_ENTRY, VALIDATE_SCHEMA
from ferry.webhooks.handlers import Admission
from ferry.webhooks.thread import RECONCILE_NICENESS
from tests.integration.conftest import Operator
from tests.integration.webhook_client import trust_only_the_api_server, validating_webhook_off
from tests.support import PAYMENTS, Kube, condition, entry, eventually, flag, schema

pytestmark = pytest.mark.integration

ENTRY_HOOK = "configentries.validate.ferry.dev"
SCHEMA_HOOK = "configschemas.validate.ferry.dev"
FLAG_HOOK = "featureflags.validate.ferry.dev"


def denial(hook: str, message: str) -> str:
    """The line kubectl prints for a refusal by one of Ferry's webhooks (server-side apply)."""
    return (
        f'Error from server (Forbidden): admission webhook "{hook}" denied the request: {message}'
    )


def exists(kube: Kube, kind: str, name: str, ns: str) -> bool:
    return kube.kubectl("get", kind, name, "-n", ns, check=False).returncode == 0


def wait_condition(kube: Kube, ns: str, name: str, kind: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        result = kube.kubectl("get", "configentry", name, "-n", ns, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        c = condition(json.loads(result.stdout), kind)
        return c if c and c["status"] == status else None

    return eventually(probe, timeout=30, what=f"ConfigEntry {ns}/{name} {kind}={status}")


@pytest.fixture(scope="module", autouse=True)
def api_server_certificate_required(kube: Kube, ferry_operator: Operator) -> None:
    trust_only_the_api_server(kube, ferry_operator)


@pytest.fixture
def ns(kube: Kube, operator: Operator) -> str:
    return kube.namespace("adm")


# ------------------------------------------------------------------------- accepted / refused


def test_valid_schema_entry_and_flag_applied_together_are_accepted(kube: Kube, ns: str) -> None:
    # One file, as GitOps syncs it: the entry arrives before the index has seen the schema.
    result = kube.apply(
        schema("payments", ns, PAYMENTS),
        entry("defaults", ns, {"data": {"db": {"host": "db.internal"}}}),
        entry(
            "api",
            ns,
            {
                "schemaRef": {"name": "payments"},
                "inherits": [{"name": "defaults"}],
                "data": {"db": {"poolSize": 40}},
            },
        ),
        flag("checkout", ns, {"variants": {"on": True, "off": False}, "defaultVariant": "off"}),
    )

    assert "configentry.ferry.dev/api serverside-applied" in result.stdout
    assert "featureflag.ferry.dev/checkout serverside-applied" in result.stdout
    wait_condition(kube, ns, "api", "Ready", "True")


def test_entry_violating_its_schema_is_refused_listing_every_violation(kube: Kube, ns: str) -> None:
    kube.apply(schema("payments", ns, PAYMENTS))
    bad = entry(
        "api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 500, "host": 7}}}
    )

    applied = kube.apply(bad, check=False)
    created = kube.create(bad, check=False)

    message = (
        f"ConfigEntry {ns}/api is invalid: spec.data.db.host: 7 is not of type 'string'; "
        "spec.data.db.poolSize: 500 is greater than the maximum of 100"
    )
    assert applied.returncode != 0
    assert denial(ENTRY_HOOK, message) in applied.stderr
    assert created.returncode != 0
    assert (
        'Error from server (Forbidden): error when creating "STDIN": '
        f'admission webhook "{ENTRY_HOOK}" denied the request: {message}'
    ) in created.stderr
    assert not exists(kube, "configentry", "api", ns)


def test_inherited_data_is_checked_after_merging(kube: Kube, ns: str) -> None:
    kube.apply(
        schema("payments", ns, PAYMENTS), entry("defaults", ns, {"data": {"db": {"poolSize": 0}}})
    )

    result = kube.apply(
        entry("api", ns, {"schemaRef": {"name": "payments"}, "inherits": [{"name": "defaults"}]}),
        check=False,
    )

    message = (
        f"ConfigEntry {ns}/api is invalid: spec.data.db.poolSize: 0 is less than the minimum of 1"
    )
    assert denial(ENTRY_HOOK, message) in result.stderr


def test_entry_naming_a_missing_schema_or_base_is_refused(kube: Kube, ns: str) -> None:
    no_schema = kube.apply(entry("a", ns, {"schemaRef": {"name": "nope"}, "data": {}}), check=False)
    no_base = kube.apply(entry("b", ns, {"inherits": [{"name": "gone"}]}), check=False)

    assert (
        denial(
            ENTRY_HOOK,
            f'ConfigEntry {ns}/a is invalid: spec.schemaRef.name: ConfigSchema "nope" not found',
        )
        in no_schema.stderr
    )
    assert (
        f'admission webhook "{ENTRY_HOOK}" denied the request: ConfigEntry {ns}/b is invalid: '
        in no_base.stderr
    )
    assert "spec.inherits[0].name:" in no_base.stderr and '"gone"' in no_base.stderr
    assert not exists(kube, "configentry", "a", ns) and not exists(kube, "configentry", "b", ns)


def test_invalid_target_names_are_refused(kube: Kube, ns: str) -> None:
    result = kube.apply(
        entry("a", ns, {"data": {}, "target": {"namespaces": ["prod", "Prod_EU"]}}), check=False
    )

    assert (
        denial(
            ENTRY_HOOK,
            f"ConfigEntry {ns}/a is invalid: spec.target.namespaces[1]: 'Prod_EU' is not a valid "
            "namespace name",
        )
        in result.stderr
    )


def test_rendered_size_over_a_configmap_is_refused_with_the_size(kube: Kube, ns: str) -> None:
    result = kube.apply(entry("big", ns, {"data": {"blob": "x" * 1_100_000}}), check=False)

    prefix = f"ConfigEntry {ns}/big is invalid: spec.data: rendered configuration is "
    assert denial(ENTRY_HOOK, prefix) in result.stderr
    assert "bytes; a ConfigMap holds at most 1048576 bytes (1 MiB)" in result.stderr


def test_schema_invalid_for_its_draft_or_with_a_remote_ref_is_refused(kube: Kube, ns: str) -> None:
    bad_type = kube.apply(schema("a", ns, {"type": "objekt"}), check=False)
    remote = kube.apply(schema("b", ns, {"$ref": "https://example.com/s.json"}), check=False)

    assert (
        f'"{SCHEMA_HOOK}" denied the request: ConfigSchema {ns}/a is invalid: spec.schema.type: '
        in bad_type.stderr
    )
    assert (
        "spec.schema.type: 'objekt' is not valid under any of the given schemas" in bad_type.stderr
    )
    assert (
        denial(
            SCHEMA_HOOK,
            f"ConfigSchema {ns}/b is invalid: spec.schema.$ref: "
            'remote $ref "https://example.com/s.json" is not allowed (Ferry never fetches schemas)',
        )
        in remote.stderr
    )
    assert not exists(kube, "configschema", "a", ns) and not exists(kube, "configschema", "b", ns)


def test_schema_update_breaking_an_entry_is_refused_unless_compatibility_is_none(
    kube: Kube, ns: str
) -> None:
    kube.apply(
        schema("payments", ns, PAYMENTS),
        entry("api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}),
        entry("small", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 5}}}),
    )
    wait_condition(kube, ns, "api", "Ready", "True")
    stricter = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}

    refused = kube.apply(schema("payments", ns, stricter), check=False)

    assert (
        denial(
            SCHEMA_HOOK,
            f"ConfigSchema {ns}/payments is invalid: spec.schema: "
            'would make ConfigEntry "api" invalid (1 violation); '
            "fix the entry first, or set spec.compatibility: None",
        )
        in refused.stderr
    )
    stored = kube.get_json("configschema", "payments", "-n", ns)
    assert stored["spec"]["schema"] == PAYMENTS

    kube.apply(schema("payments", ns, stricter, compatibility="None"))

    valid = wait_condition(kube, ns, "api", "Valid", "False")
    assert "spec.data.db.poolSize: 40 is greater than the maximum of 10" in valid["message"]
    assert condition(kube.get_json("configentry", "small", "-n", ns), "Valid")["status"] == "True"


def test_invalid_feature_flags_are_refused_with_every_problem(kube: Kube, ns: str) -> None:
    result = kube.apply(
        flag(
            "checkout",
            ns,
            {
                "variants": {"on": True, "off": False},
                "defaultVariant": "maybe",
                "targeting": [
                    {
                        "when": [{"attribute": "email", "op": "soundsLike", "value": "x"}],
                        "split": [
                            {"variant": "on", "weight": 30},
                            {"variant": "off", "weight": 60},
                        ],
                    },
                    {"when": [{"attribute": "region", "op": "in", "value": "eu"}], "variant": "x"},
                ],
            },
        ),
        check=False,
    )

    prefix = f'"{FLAG_HOOK}" denied the request: FeatureFlag {ns}/checkout is invalid: '
    assert prefix in result.stderr
    for path in (
        "spec.defaultVariant: unknown variant 'maybe'",
        "spec.targeting[0].when[0].op:",
        "spec.targeting[0].split:",
        "spec.targeting[1].variant:",
    ):
        assert path in result.stderr, path
    assert not exists(kube, "featureflag", "checkout", ns)


def test_server_side_dry_run_goes_through_the_same_checks(kube: Kube, ns: str) -> None:
    kube.apply(schema("payments", ns, PAYMENTS))
    bad = entry("api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 500}}})
    good = entry("ok", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 5}}})

    refused = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False
    )
    accepted = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(good))

    assert refused.returncode != 0
    assert "spec.data.db.poolSize: 500 is greater than the maximum of 100" in refused.stderr
    assert "configentry.ferry.dev/ok created (server dry run)" in accepted.stdout
    assert not exists(kube, "configentry", "ok", ns)


def test_new_entries_and_flags_are_stored_with_ferrys_finalizer(kube: Kube, ns: str) -> None:
    """The mutating webhook adds it on create (a dry run shows the object as it would be stored,
    before any reconcile), so no separate update is needed for it."""
    new_entry = entry("e", ns, {"data": {"a": 1}})
    new_entry["metadata"]["finalizers"] = ["example.com/keep"]
    new_flag = flag("f", ns, {"variants": {"on": True, "off": False}, "defaultVariant": "off"})

    for obj in (new_entry, new_flag):
        created = kube.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj)
        )
        finalizers = json.loads(created.stdout)["metadata"]["finalizers"]
        assert finalizers == [*obj["metadata"].get("finalizers", []), "ferry.dev/cleanup"]


def test_a_denied_write_leaves_no_trace_but_the_answer(
    kube: Kube, ns: str, database_url: str
) -> None:
    """``sideEffects: None`` holds: a webhook call writes nothing, not even an audit row, since
    what a request claims (namespace, name, user) is only as good as its sender. Nothing was
    stored either, so there is nothing for the reconciler to record."""
    kube.apply(schema("payments", ns, PAYMENTS))
    bad = entry("api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 500}}})

    refused = kube.kubectl(
        "apply",
        "--server-side",
        "--as=carol",
        "--as-group=system:masters",
        "-f",
        "-",
        input=json.dumps(bad),
        check=False,
    )

    def rows() -> list[tuple[str, str | None]]:
        with psycopg.connect(database_url) as conn:
            found = conn.execute(
                "SELECT action, username FROM audit_log WHERE namespace=%s ORDER BY id", (ns,)
            ).fetchall()
        return [(r[0], r[1]) for r in found]

    assert refused.returncode != 0
    assert "spec.data.db.poolSize: 500 is greater than the maximum of 100" in refused.stderr
    eventually(lambda: rows() or None, what="the schema's own audit row")  # the trail is written
    time.sleep(1)  # audit rows are written in the background: give a wrong one time to appear
    assert [action for action, _ in rows() if action == "admission-denied"] == []
    assert not any(user == "carol" for _, user in rows())


def test_registered_webhooks_fail_closed_quickly_and_have_no_side_effects(
    kube: Kube, ns: str
) -> None:
    validating = kube.get_json("validatingwebhookconfiguration", "ferry")
    mutating = kube.get_json("mutatingwebhookconfiguration", "ferry")

    hooks = {w["name"]: w for w in validating["webhooks"] + mutating["webhooks"]}
    assert set(hooks) == {
        ENTRY_HOOK,
        SCHEMA_HOOK,
        FLAG_HOOK,
        "configentries.stamp.ferry.dev",
        "featureflags.stamp.ferry.dev",
    }
    for name, hook in hooks.items():
        assert hook["failurePolicy"] == "Fail", name
        assert hook["sideEffects"] == "None", name
        assert hook["timeoutSeconds"] == TIMEOUT_SECONDS == 5, name
        assert hook["clientConfig"]["caBundle"], name


# -------------------------------------------------------------------------------- changed-by


def revision_authors(database_url: str, ns: str, name: str) -> list[str | None]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT changed_by FROM revisions WHERE kind='ConfigEntry' AND namespace=%s "
            "AND name=%s ORDER BY revision",
            (ns, name),
        ).fetchall()
    return [row[0] for row in rows]


def test_changes_are_stamped_with_the_requesting_user_and_recorded_in_the_revision(
    kube: Kube, ns: str, database_url: str
) -> None:
    as_alice = ("--as=alice", "--as-group=system:masters")
    as_bob = ("--as=bob", "--as-group=system:masters")
    api = entry("api", ns, {"data": {"db": {"poolSize": 40}}})
    checkout = flag(
        "checkout", ns, {"variants": {"on": True, "off": False}, "defaultVariant": "off"}
    )

    kube.kubectl(
        *as_alice,
        "apply",
        "-f",
        "-",
        input=json.dumps({"items": [api, checkout], "apiVersion": "v1", "kind": "List"}),
    )
    wait_condition(kube, ns, "api", "Ready", "True")

    stored = kube.get_json("configentry", "api", "-n", ns)["metadata"]
    flag_meta = kube.get_json("featureflag", "checkout", "-n", ns)["metadata"]
    assert stored["annotations"]["ferry.dev/changed-by"] == "alice"
    assert stored["annotations"]["ferry.dev/changed-at"].endswith("Z")
    assert "ferry.dev/cleanup" in stored["finalizers"]
    assert flag_meta["annotations"]["ferry.dev/changed-by"] == "alice"
    assert eventually(lambda: revision_authors(database_url, ns, "api"), what="a revision") == [
        "alice"
    ]

    # A label from bob changes no configuration: the stamp stays alice's.
    kube.kubectl(*as_bob, "label", "configentry", "api", "-n", ns, "team=payments")
    # A forged stamp is put back.
    kube.kubectl(
        *as_bob,
        "annotate",
        "--overwrite",
        "configentry",
        "api",
        "-n",
        ns,
        "ferry.dev/changed-by=mallory",
    )
    assert (
        kube.get_json("configentry", "api", "-n", ns)["metadata"]["annotations"][
            "ferry.dev/changed-by"
        ]
        == "alice"
    )

    api["spec"]["data"]["db"]["poolSize"] = 41
    kube.kubectl(*as_bob, "apply", "-f", "-", input=json.dumps(api))
    assert eventually(
        lambda: (a := revision_authors(database_url, ns, "api")) == ["alice", "bob"] and a,
        what="bob's revision",
    ) == ["alice", "bob"]


# ----------------------------------------------------------------------- webhook off: reconcile


@pytest.fixture
def webhook_off(kube: Kube) -> Iterator[None]:
    with validating_webhook_off(kube):
        yield


def test_entry_stored_while_the_webhook_was_off_never_reaches_a_workload(
    kube: Kube, ns: str, webhook_off: None
) -> None:
    kube.apply(schema("payments", ns, PAYMENTS))
    kube.apply(
        entry("api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 500}}})
    )

    valid = wait_condition(kube, ns, "api", "Valid", "False")

    assert "spec.data.db.poolSize: 500 is greater than the maximum of 100" in valid["message"]
    assert kube.kubectl("get", "configmap", "api", "-n", ns, check=False).returncode != 0


def test_metadata_updates_of_a_stored_invalid_entry_are_allowed(kube: Kube, ns: str) -> None:
    """An entry stored while the webhook was off (or broken by a compatibility: None schema
    change) can still be labelled, and the operator can still add and remove its finalizer."""
    kube.apply(
        schema("payments", ns, PAYMENTS),
        entry("api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}),
    )
    wait_condition(kube, ns, "api", "Ready", "True")
    stricter = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}
    kube.apply(schema("payments", ns, stricter, compatibility="None"))
    wait_condition(kube, ns, "api", "Valid", "False")

    kube.kubectl("label", "configentry", "api", "-n", ns, "team=payments")
    kube.kubectl("delete", "configentry", "api", "-n", ns, "--timeout=30s")

    assert not exists(kube, "configentry", "api", ns)


# ------------------------------------------------------------------------------ hostile input


def nested_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def hostile_cases() -> list[tuple[str, str]]:
    """(id, ConfigEntry/ConfigSchema JSON text) for ns placeholder NS."""

    def text(obj: dict[str, Any], data_text: str | None = None) -> str:
        raw = json.dumps(obj)
        return raw.replace('"@DATA@"', data_text) if data_text is not None else raw

    with_data = entry("hostile", "@NS@", {"data": "@DATA@"})
    catastrophic = schema("catastrophic", "@NS@", {"properties": {"s": {"pattern": "^(a+)+$"}}})
    catastrophic_entry = entry(
        "catastrophic-entry",
        "@NS@",
        {"schemaRef": {"name": "catastrophic"}, "data": {"s": "a" * 100 + "!"}},
    )
    return [
        ("nesting-10000", text(with_data, nested_json(10_000))),
        ("nesting-2000", text(with_data, nested_json(2_000))),
        ("nesting-500", text(with_data, nested_json(500))),
        ("body-2.5MB", text(entry("hostile", "@NS@", {"data": {"blob": "x" * 2_500_000}}))),
        (
            "body-2.5MB-many-keys",
            text(entry("hostile", "@NS@", {"data": {f"k{i}": "v" * 20 for i in range(100_000)}})),
        ),
        ("catastrophic-pattern", text(catastrophic) + "\n" + text(catastrophic_entry)),
        ("backreference-pattern", text(schema("backref", "@NS@", {"pattern": "^(a)\\1$"}))),
        (
            "unicode-and-nul-keys",
            text(
                entry(
                    "hostile",
                    "@NS@",
                    {"data": {"\u0000": 1, "ключ\u0000🚀": {"\u202e": "x"}, "a.b": None}},
                )
            ),
        ),
        (
            "unicode-nul-keys-env",
            text(
                entry(
                    "hostile", "@NS@", {"data": {"\u0000": 1, "é": 2}, "target": {"format": "env"}}
                )
            ),
        ),
        (
            "remote-ref",
            text(schema("remote", "@NS@", {"$ref": "http://169.254.169.254/latest/meta-data"})),
        ),
        (
            "recursive-ref",
            text(
                schema(
                    "recursive",
                    "@NS@",
                    {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
                )
            ),
        ),
        (
            "recursive-ref-entry",
            text(
                schema(
                    "loop",
                    "@NS@",
                    {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
                )
            )
            + "\n"
            + text(entry("loop-entry", "@NS@", {"schemaRef": {"name": "loop"}, "data": {"x": 1}})),
        ),
        (
            "inheritance-cycle",
            text(entry("cycle-a", "@NS@", {"inherits": [{"name": "cycle-a"}], "data": {}})),
        ),
    ]


def plural(document: str) -> str:
    return "configschemas" if '"kind": "ConfigSchema"' in document[:200] else "configentries"


def assert_answered(result_stderr: str, returncode: int, elapsed: float) -> None:
    assert elapsed < TIMEOUT_SECONDS, f"took {elapsed:.1f}s"
    for sign in ("failed calling webhook", "context deadline exceeded", "InternalError", "EOF"):
        assert sign not in result_stderr, result_stderr[:2000]
    if returncode != 0:
        assert "denied the request" in result_stderr or "Error from server" in result_stderr, (
            result_stderr[:2000]
        )


@pytest.mark.parametrize(("case", "document"), hostile_cases(), ids=[c for c, _ in hostile_cases()])
def test_hostile_input_is_answered_within_the_timeout(
    kube: Kube, ns: str, operator: Operator, case: str, document: str
) -> None:
    text = document.replace("@NS@", ns)
    results = []
    for part in text.split("\n"):
        started = time.monotonic()
        # kubectl's own JSON decoder stops at 10,000 levels; --raw sends the bytes as they are.
        path = f"/apis/ferry.dev/v1alpha1/namespaces/{ns}/{plural(part)}"
        result = kube.kubectl(
            "create", "--raw", path, "-f", "-", input=part, check=False, timeout=60
        )
        results.append(result)
        assert_answered(result.stderr, result.returncode, time.monotonic() - started)

    stderr = results[-1].stderr
    expected: dict[str, str | tuple[str, ...]] = {
        # The API server's own JSON decoder stops at 10,000 levels, before any webhook.
        "nesting-10000": "exceeded max depth",
        # Deeper than Python decodes (2,000): named from the text in front of the object.
        "nesting-2000": f"ConfigEntry {ns}/hostile is invalid: spec: is nested too deeply",
        # Decodable: the depth check names the path where the data goes too deep.
        "nesting-500": (
            f"ConfigEntry {ns}/hostile is invalid: spec.data.a.a.a.a",
            ": data is nested deeper than 64 levels",
        ),
        # Past aiohttp's default 1 MiB body limit, still answered by the webhook.
        "body-2.5MB": f"ConfigEntry {ns}/hostile is invalid: spec.data: rendered configuration is",
        "body-2.5MB-many-keys": "Request entity too large: limit is 3145728",
        "catastrophic-pattern": "a!' does not match '^(a+)+$'",
        "backreference-pattern": "spec.schema.pattern: pattern uses a feature Ferry's linear-time "
        "regex engine does not support",
        "unicode-nul-keys-env": "env key _ produced by both",
        "remote-ref": 'spec.schema.$ref: remote $ref "http://169.254.169.254/latest/meta-data" '
        "is not allowed (Ferry never fetches schemas)",
        "recursive-ref-entry": "spec.data: cannot validate: the schema's $ref recursion never ends",
        "inheritance-cycle": "spec.inherits: inheritance cycle: cycle-a → cycle-a",
    }
    if case in expected:
        assert results[-1].returncode != 0
        wanted = expected[case]
        for part in wanted if isinstance(wanted, tuple) else (wanted,):
            assert part in stderr, stderr[:2000]
    else:  # JSON that is merely unusual is stored as it is
        assert [r.returncode for r in results] == [0] * len(results), stderr[:2000]
    if case == "unicode-and-nul-keys":
        stored = kube.get_json("configentry", "hostile", "-n", ns)["spec"]["data"]
        assert stored == {"\u0000": 1, "ключ\u0000🚀": {"\u202e": "x"}, "a.b": None}
    # Whatever happened, the operator is still serving.
    assert operator.process is not None and operator.process.alive()


# ------------------------------------------------------------------------------- hypothesis

keys = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]), min_size=0, max_size=6
) | st.sampled_from(["db", "poolSize", "host", "\u0000", "a.b"])
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=12,
)
random_specs = st.fixed_dictionaries(
    {"data": st.dictionaries(keys, values, max_size=4)},
    optional={
        "schemaRef": st.fixed_dictionaries({"name": st.sampled_from(["payments", "missing"])}),
        "target": st.fixed_dictionaries(
            {},
            optional={
                "format": st.sampled_from(["json", "yaml", "env", "properties", "files"]),
                "namespaces": st.lists(st.sampled_from(["ok", "Not_OK", "a" * 63]), max_size=2),
            },
        ),
    },
)
random_schemas = st.one_of(
    st.just(PAYMENTS),
    st.dictionaries(
        st.sampled_from(["type", "pattern", "maximum", "$ref", "required", "properties"]),
        values,
        max_size=3,
    ),
)


@pytest.fixture(scope="module")
def hypothesis_ns(kube: Kube, ferry_operator: Operator) -> str:
    ferry_operator.ensure_running()
    name = kube.namespace("adm-hyp")
    kube.apply(schema("payments", name, PAYMENTS))
    return name


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=random_specs, schema_body=random_schemas)
def test_random_entries_and_schemas_are_allowed_or_denied_never_an_error(
    kube: Kube, hypothesis_ns: str, spec: dict[str, Any], schema_body: Any
) -> None:
    for obj in (
        entry("random", hypothesis_ns, spec),
        schema("random", hypothesis_ns, schema_body),
    ):
        started = time.monotonic()
        result = kube.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False
        )
        assert_answered(result.stderr, result.returncode, time.monotonic() - started)
        if result.returncode != 0 and "denied the request" not in result.stderr:
            # Refused before the webhook (the CRD's own schema): still an answer, with a reason.
            assert "Invalid value" in result.stderr or "Unsupported value" in result.stderr, (
                result.stderr
            )


# ------------------------------------------------------------------ a refusal is confirmed live


def snapshot(spec: dict[str, Any]) -> Snapshot:
    return Snapshot("uid-1", 1, "1", {}, (), False, spec, {})


def create_review(obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    """The AdmissionReview the API server sends for ``obj`` (an update of ``old`` if given)."""
    hook = VALIDATE_ENTRY if obj["kind"] == "ConfigEntry" else VALIDATE_SCHEMA
    gvk = {"group": kinds.GROUP, "version": kinds.VERSION}
    request = {
        "uid": "u-1",
        "kind": {**gvk, "kind": hook.kind.kind},
        "resource": {**gvk, "resource": hook.kind.plural},
        "operation": "CREATE" if old is None else "UPDATE",
        "userInfo": {"username": "alice"},
        "object": obj,
        "oldObject": old,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@pytest.fixture
async def stale_admission(kube: Kube) -> AsyncIterator[Callable[..., Admission]]:
    """An ``Admission`` over an index held stale on purpose (built by the test, never fed by a
    watch), reading the test's API server live; its own validation worker."""
    client = AsyncClient(KubeConfig.from_file(str(kube.kubeconfig)))
    pool = Isolation(workers=1, timeout_seconds=5.0)
    try:
        yield lambda world, vault=None: Admission(world, vault or VaultSettings(), client, pool)
    finally:
        await pool.close()
        await client.close()


def stale_world(**indexes: Any) -> World:
    empty: dict[str, Any] = {"entries": {}, "schemas": {}, "flags": {}, "namespaces": {}}
    return World(**{**empty, **indexes}, configmaps={}, secrets={}, workloads=())


async def test_a_refusal_is_given_only_if_the_stored_objects_still_call_for_it(
    kube: Kube, ns: str, stale_admission: Callable[..., Admission]
) -> None:
    """`kubectl apply -f` of a relaxed schema and an entry only it allows sends them
    milliseconds apart, and the index the webhook reads trails the API server by a watch event.
    Here the index still holds the strict version (maximum 10) while the API server stores the
    relaxed one (maximum 100): the entry is allowed, and a refusal names the stored limit."""
    kube.apply(schema("payments", ns, PAYMENTS))
    strict = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}
    world = stale_world(schemas={(ns, "payments"): [snapshot({"schema": strict})]})
    admission = stale_admission(world)

    def pool_size(n: int) -> dict[str, Any]:
        spec = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": n}}}
        return create_review(entry("api", ns, spec))

    allowed = await admission(pool_size(40), webhook=VALIDATE_ENTRY.path)
    assert allowed["response"]["allowed"] is True, allowed["response"]
    refused = (await admission(pool_size(500), webhook=VALIDATE_ENTRY.path))["response"]
    assert refused["allowed"] is False
    assert (
        "spec.data.db.poolSize: 500 is greater than the maximum of 100"
        in (refused["status"]["message"])
    )


async def test_a_vault_path_just_allowed_by_the_namespace_annotation_is_accepted(
    kube: Kube, ns: str, stale_admission: Callable[..., Admission]
) -> None:
    """`kubectl annotate namespace … ferry.dev/vault-paths=…` and, at once, the entry that
    needs it: the index still has the namespace without the annotation."""
    kube.kubectl("annotate", "namespace", ns, "ferry.dev/vault-paths=shared/certs")
    world = stale_world(namespaces={ns: [({}, {})]})
    admission = stale_admission(world, VaultSettings(address="http://127.0.0.1:8200"))

    def secret_at(path: str) -> dict[str, Any]:
        spec = {"data": {}, "secretData": {"TLS_CERT": {"vault": {"path": path, "key": "crt"}}}}
        return create_review(entry("tls", ns, spec))

    allowed = await admission(secret_at("shared/certs/x"), webhook=VALIDATE_ENTRY.path)
    assert allowed["response"]["allowed"] is True, allowed["response"]
    refused = (await admission(secret_at("team-b/db"), webhook=VALIDATE_ENTRY.path))["response"]
    assert refused["allowed"] is False
    assert 'may only name Vault paths under "shared/certs"' in refused["status"]["message"]


async def test_a_schema_update_is_checked_against_the_entries_the_api_server_stores(
    kube: Kube, ns: str, stale_admission: Callable[..., Admission]
) -> None:
    """A GitOps sync fixes an entry (poolSize 40 → 5) and tightens its schema (maximum 10)
    milliseconds later; the index still holds the entry as it was. The update is allowed; an
    entry the API server still stores as breaking it is named."""
    kube.apply(
        schema("payments", ns, PAYMENTS),
        entry("api", ns, {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 5}}}),
    )
    was = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}
    admission = stale_admission(stale_world(entries={(ns, "api"): [snapshot(was)]}))
    stricter = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}
    update = create_review(schema("payments", ns, stricter), schema("payments", ns, PAYMENTS))

    allowed = await admission(update, webhook=VALIDATE_SCHEMA.path)
    assert allowed["response"]["allowed"] is True, allowed["response"]

    kube.apply(entry("other", ns, was))
    refused = (await admission(update, webhook=VALIDATE_SCHEMA.path))["response"]
    assert refused["allowed"] is False
    assert 'would make ConfigEntry "other" invalid' in refused["status"]["message"]
    assert '"api"' not in refused["status"]["message"]


def test_the_reconcile_thread_yields_the_cpu_to_the_admission_thread(operator: Operator) -> None:
    """On a busy node a `kubectl apply` waiting on the webhooks should not queue for a CPU
    behind reconciling: the operator's main thread (the reconcile loop) runs
    RECONCILE_NICENESS below the threads started before it was lowered, the admission
    thread among them (decision 0026; `ps -L -o tid,ni` shows the same)."""
    assert operator.process is not None
    pid = operator.process.pid
    tasks = Path(f"/proc/{pid}/task")

    threads: dict[int, int] = {}
    for task in tasks.iterdir():
        try:  # field 19 of stat(5), the 17th after the command's ")"
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # a short-lived thread ended meanwhile
        threads[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])
    assert len(threads) > 1
    assert threads[pid] == min(threads.values()) + RECONCILE_NICENESS, threads


class CatchingUp(dict):  # type: ignore[type-arg]
    """An index that has not heard of its objects at the first lookup and has at the next: the
    watch event arrives between the check that refuses and the live read that confirms."""

    def __init__(self, later: dict[Any, Any]) -> None:
        super().__init__()
        self.later = later

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self.later and key not in self:
            self[key] = self.later[key]
            return default
        return super().get(key, default)


async def test_a_refusal_is_checked_again_even_if_the_index_caught_up_meanwhile(
    kube: Kube, ns: str, stale_admission: Callable[..., Admission]
) -> None:
    """After the live read the index holds what was read, so comparing the two says "nothing
    changed" although the check that refused had not seen the schema at all."""
    kube.apply(schema("payments", ns, PAYMENTS))
    stored = kube.get_json("configschema", "payments", "-n", ns)["spec"]
    later = {(ns, "payments"): [snapshot(stored)]}
    admission = stale_admission(stale_world(schemas=CatchingUp(later)))
    spec = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}

    answer = await admission(create_review(entry("api", ns, spec)), webhook=VALIDATE_ENTRY.path)
    assert answer["response"]["allowed"] is True, answer["response"]
