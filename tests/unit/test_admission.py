"""What the admission webhooks decide, as pure functions: the messages a user reads after a refused
`kubectl apply`, and hostile or random input that must always get an answer, never an exception."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.domain import kinds
from ferry.domain.admission import (
    CHEAP_CHARS,
    CHEAP_DEPTH,
    CHEAP_SCHEMA_CHARS,
    CHEAP_SCHEMA_VALUES,
    CHEAP_VALUES,
    _within,
    cheap_to_check,
    check_entry,
    check_flag,
    check_schema_change,
    check_schema_request,
    denial_message,
    finalizers_on_create,
    identity,
    is_checked,
    next_to_read,
    stamp,
    stamp_changes,
)
from ferry.domain.errors import Violation
from ferry.domain.labels import CHANGED_AT, CHANGED_BY, FINALIZER
from ferry.tls import serving_certificate
from ferry.webhooks.configurations import (
    HOOKS,
    TIMEOUT_SECONDS,
    templates,
    webhook_configurations,
)
from tests.support import PAYMENTS

REPO = Path(__file__).resolve().parents[2]


def schema_spec(schema: Any, compatibility: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"schema": schema}
    if compatibility is not None:
        spec["compatibility"] = compatibility
    return spec


# ------------------------------------------------------------------------------ ConfigEntry


def test_valid_entry_has_no_violations() -> None:
    spec = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}

    assert check_entry("platform", "api", spec, {}, {"payments": schema_spec(PAYMENTS)}) == []


def test_every_schema_violation_is_listed_with_its_json_path() -> None:
    spec = {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 500, "host": 7}}}

    violations = check_entry("platform", "api", spec, {}, {"payments": schema_spec(PAYMENTS)})

    assert [str(v) for v in violations] == [
        "spec.data.db.host: 7 is not of type 'string'",
        "spec.data.db.poolSize: 500 is greater than the maximum of 100",
    ]


def test_inherited_data_is_validated_after_merging() -> None:
    base = {"data": {"db": {"poolSize": 500}}}
    spec = {"schemaRef": {"name": "payments"}, "inherits": [{"name": "defaults"}], "data": {}}

    violations = check_entry(
        "platform", "api", spec, {"defaults": base}, {"payments": schema_spec(PAYMENTS)}
    )

    assert [str(v) for v in violations] == [
        "spec.data.db.poolSize: 500 is greater than the maximum of 100"
    ]


def test_missing_schema_and_missing_base_are_named() -> None:
    no_schema = check_entry("ns", "api", {"schemaRef": {"name": "nope"}, "data": {}}, {}, {})
    no_base = check_entry("ns", "api", {"inherits": [{"name": "gone"}], "data": {}}, {}, {})

    assert [str(v) for v in no_schema] == ['spec.schemaRef.name: ConfigSchema "nope" not found']
    assert len(no_base) == 1
    assert no_base[0].path == "spec.inherits[0].name"
    assert '"gone"' in no_base[0].message


def test_target_namespace_and_object_names_must_be_valid() -> None:
    spec = {
        "data": {},
        "target": {"namespaces": ["payments-prod", "Payments_Dev", "-x"], "name": "Bad Name"},
    }

    violations = check_entry("ns", "api", spec, {}, {})

    assert [v.path for v in violations] == [
        "spec.target.name",
        "spec.target.namespaces[1]",
        "spec.target.namespaces[2]",
    ]
    assert "'Payments_Dev' is not a valid namespace name" in violations[1].message


def test_rendered_size_over_the_configmap_limit_is_refused_with_the_size() -> None:
    spec = {"data": {"blob": "x" * (1024 * 1024 + 10)}}

    violations = check_entry("ns", "api", spec, {}, {})

    assert len(violations) == 1
    assert violations[0].path == "spec.data"
    assert "bytes; a ConfigMap holds at most 1048576 bytes" in violations[0].message


def test_env_key_collision_names_both_paths() -> None:
    spec = {"data": {"db": {"pool": 1}, "DB_POOL": 2}, "target": {"format": "env"}}

    violations = check_entry("ns", "api", spec, {}, {})

    assert violations, "two leaves rendering to DB_POOL must be refused"
    assert any("db" in v.message and "DB_POOL" in v.message for v in violations)


@pytest.mark.parametrize("spec", [None, [], "text", 42])
def test_a_spec_that_is_not_an_object_is_a_violation(spec: Any) -> None:
    assert check_entry("ns", "api", spec, {}, {}) == [Violation("spec", "must be an object")]


def test_data_nested_too_deep_for_python_is_a_violation_not_an_exception() -> None:
    data: dict[str, Any] = {}
    cursor = data
    for _ in range(5000):
        cursor["a"] = {}
        cursor = cursor["a"]

    violations = check_entry("ns", "api", {"data": data}, {}, {})

    assert violations == [
        Violation("spec.data" + ".a" * 64, "data is nested deeper than 64 levels")
    ]


def test_deeply_nested_data_is_refused_quickly_with_its_path() -> None:
    data: dict[str, Any] = {}
    cursor = data
    for _ in range(300):
        cursor["a"] = {}
        cursor = cursor["a"]

    started = time.monotonic()
    spec = {"schemaRef": {"name": "any"}, "data": data}
    violations = check_entry("ns", "api", spec, {}, {"any": schema_spec({"type": "object"})})

    assert time.monotonic() - started < 1
    assert len(violations) == 1
    assert "nested deeper than 64 levels" in violations[0].message
    assert violations[0].path.startswith("spec.data.a.a.a")


# ----------------------------------------------------------------------------- ConfigSchema


def test_schema_invalid_for_its_draft_is_refused() -> None:
    violations = check_schema_change(
        "ns", "s", schema_spec({"type": "objekt", "minimum": "one"}), {}, {}
    )

    assert [v.path for v in violations] == ["spec.schema.minimum", "spec.schema.type"]


def test_remote_ref_is_refused() -> None:
    spec = schema_spec({"$ref": "https://example.com/schema.json"})

    violations = check_schema_change("ns", "s", spec, {}, {})

    assert [str(v) for v in violations] == [
        'spec.schema.$ref: remote $ref "https://example.com/schema.json" is not allowed '
        "(Ferry never fetches schemas)"
    ]


def test_backward_update_that_breaks_an_entry_is_refused_naming_it() -> None:
    entries = {
        "api": {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}},
        "worker": {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 5}}},
        "other": {"data": {"db": {"poolSize": 40}}},
    }
    stricter = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}

    violations = check_schema_change(
        "ns", "payments", schema_spec(stricter), entries, {"payments": schema_spec(PAYMENTS)}
    )

    assert [str(v) for v in violations] == [
        'spec.schema: would make ConfigEntry "api" invalid (1 violation); '
        "fix the entry first, or set spec.compatibility: None"
    ]


def test_compatible_update_and_compatibility_none_are_accepted() -> None:
    entries = {"api": {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}}
    stricter = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}
    looser = {"type": "object"}
    stored = {"payments": schema_spec(PAYMENTS)}

    assert check_schema_change("ns", "payments", schema_spec(looser), entries, stored) == []
    assert (
        check_schema_change("ns", "payments", schema_spec(stricter, "None"), entries, stored) == []
    )


def test_entries_already_invalid_do_not_block_an_update() -> None:
    entries = {"api": {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 500}}}}
    stricter = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}

    violations = check_schema_change(
        "ns", "payments", schema_spec(stricter), entries, {"payments": schema_spec(PAYMENTS)}
    )

    assert violations == []


def test_breakage_through_inherited_data_is_found() -> None:
    entries = {
        "defaults": {"data": {"db": {"poolSize": 40}}},
        "api": {"schemaRef": {"name": "payments"}, "inherits": [{"name": "defaults"}]},
    }
    stricter = {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}

    violations = check_schema_change(
        "ns", "payments", schema_spec(stricter), entries, {"payments": schema_spec(PAYMENTS)}
    )

    assert len(violations) == 1
    assert 'ConfigEntry "api"' in violations[0].message


def test_a_broken_entry_is_named_and_counted_but_its_data_is_not_quoted() -> None:
    """The denial goes to whoever sent the schema: another entry's data stays out of it."""
    data = {f"secret-key-{i}": f"secret-value-{i}" for i in range(5)}
    entries = {"api": {"schemaRef": {"name": "s"}, "data": data}}
    stricter = {"additionalProperties": {"type": "integer"}}

    violations = check_schema_change(
        "ns", "s", schema_spec(stricter), entries, {"s": schema_spec({})}
    )

    assert [str(v) for v in violations] == [
        'spec.schema: would make ConfigEntry "api" invalid (5 violations); '
        "fix the entry first, or set spec.compatibility: None"
    ]
    assert "secret" not in violations[0].message


def test_a_schema_request_is_compared_with_its_own_old_object_not_the_index() -> None:
    entries = {"api": {"schemaRef": {"name": "payments"}, "data": {"db": {"poolSize": 40}}}}
    stricter = schema_spec(
        {**PAYMENTS, "properties": {"db": {"properties": {"poolSize": {"maximum": 10}}}}}
    )
    lagging_index = {"payments": stricter}  # the index has not seen the stored schema yet

    update = check_schema_request(
        "UPDATE", "ns", "payments", stricter, schema_spec(PAYMENTS), entries, lagging_index
    )
    create = check_schema_request(
        "CREATE", "ns", "payments", stricter, None, entries, {"payments": schema_spec(PAYMENTS)}
    )

    assert ['would make ConfigEntry "api" invalid' in v.message for v in update] == [True]
    assert create == []  # a new schema has nothing to be compatible with
    assert lagging_index == {"payments": stricter}  # the caller's mapping is left alone


# ------------------------------------------------------------------------------ FeatureFlag


def test_flag_checks_are_the_domain_ones() -> None:
    spec = {
        "variants": {"on": True, "off": False},
        "defaultVariant": "maybe",
        "targeting": [
            {
                "when": [{"attribute": "email", "op": "sounds-like", "value": "x"}],
                "split": [{"variant": "on", "weight": 30}, {"variant": "gone", "weight": 30}],
            }
        ],
    }

    paths = {v.path for v in check_flag(spec)}

    assert "spec.defaultVariant" in paths
    assert "spec.targeting[0].when[0].op" in paths
    assert any(p.startswith("spec.targeting[0].split") for p in paths)


# ---------------------------------------------------------------------------------- message


def test_denial_message_names_the_object_and_every_violation() -> None:
    violations = [Violation("spec.b", "second"), Violation("spec.a", "first")]

    message = denial_message("ConfigEntry", "platform", "api", violations)

    assert message == "ConfigEntry platform/api is invalid: spec.a: first; spec.b: second"


def test_denial_message_counts_what_it_does_not_list() -> None:
    violations = [Violation(f"spec.data.k{i:03}", "bad") for i in range(60)]

    message = denial_message("ConfigEntry", "ns", "api", violations)

    assert message.endswith("; and 10 more")
    assert message.count(": bad") == 50


# ----------------------------------------------------------------------------- changed-by


def body(spec: Any, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations or {}}, "spec": spec}


def test_create_and_spec_changes_are_stamped_with_the_user() -> None:
    created = stamp_changes("CREATE", None, body({"data": {}}), "alice", "T1")
    updated = stamp_changes(
        "UPDATE",
        body({"data": {}}, {CHANGED_BY: "alice", CHANGED_AT: "T1"}),
        body({"data": {"a": 1}}, {CHANGED_BY: "alice", CHANGED_AT: "T1"}),
        "bob",
        "T2",
    )

    assert created == {CHANGED_BY: "alice", CHANGED_AT: "T1"}
    assert updated == {CHANGED_BY: "bob", CHANGED_AT: "T2"}


def test_metadata_only_update_keeps_the_stamp_and_undoes_hand_edits() -> None:
    stamp = {CHANGED_BY: "alice", CHANGED_AT: "T1"}
    untouched = stamp_changes(
        "UPDATE", body({"data": {}}, stamp), body({"data": {}}, stamp), "operator", "T2"
    )
    forged = stamp_changes(
        "UPDATE",
        body({"data": {}}, stamp),
        body({"data": {}}, {CHANGED_BY: "mallory"}),
        "mallory",
        "T2",
    )
    never_stamped = stamp_changes(
        "UPDATE", body({"data": {}}), body({"data": {}}, {CHANGED_BY: "mallory"}), "x", "T2"
    )

    assert untouched == {}
    assert forged == {CHANGED_BY: "alice", CHANGED_AT: "T1"}
    assert never_stamped == {CHANGED_BY: None}


# --------------------------------------------------------------- what the handlers ask


def test_only_creates_and_spec_changes_of_live_objects_are_checked() -> None:
    old = {"metadata": {"name": "e"}, "spec": {"data": {"a": 1}}}
    labelled = {"metadata": {"name": "e", "labels": {"team": "x"}}, "spec": {"data": {"a": 1}}}
    changed = {"metadata": {"name": "e"}, "spec": {"data": {"a": 2}}}
    deleting = {"metadata": {"name": "e", "deletionTimestamp": "T"}, "spec": {"data": {"a": 2}}}

    assert is_checked("CREATE", None, old)
    assert is_checked("UPDATE", old, changed)
    assert not is_checked("UPDATE", old, labelled)
    assert not is_checked("UPDATE", old, deleting)


def test_identity_names_the_object_or_its_generate_name() -> None:
    assert identity({"metadata": {"namespace": "ns", "name": "a"}}) == ("ns", "a")
    assert identity({"metadata": {"namespace": "ns", "generateName": "a-"}}) == ("ns", "a-")
    assert identity({"metadata": "not an object"}) == ("", "")
    assert identity(None) == ("", "")


def test_every_reference_is_named_once_following_the_bases_of_what_was_read() -> None:
    """What a refusal rests on, for reading live: the schema, then every base once, the bases
    of a base found through what the caller read (not what the index held), never the entry
    itself (an inheritance cycle back to it), whether or not the index already has them."""
    spec = {"schemaRef": {"name": "s"}, "inherits": [{"name": "b1"}, {"name": "known"}]}
    entries: dict[str, Any] = {"known": {"inherits": [{"name": "b2"}]}}
    read: set[tuple[str, str]] = set()
    named = []

    while (wanted := next_to_read("api", spec, entries, read)) is not None:
        kind, name = wanted
        named.append((kind.kind, name))
        read.add((kind.kind, name))
        if name == "b1":  # read live: its own bases are looked for next
            entries["b1"] = {"inherits": [{"name": "b3"}, {"name": "api"}]}

    assert named[0] == (kinds.CONFIG_SCHEMA.kind, "s")
    assert sorted(named[1:]) == [
        ("ConfigEntry", "b1"),
        ("ConfigEntry", "b2"),
        ("ConfigEntry", "b3"),
        ("ConfigEntry", "known"),
    ]
    assert next_to_read("api", {"data": {}}, {}, set()) is None


def test_stamp_is_the_annotations_and_finalizer_and_nothing_for_a_deleting_object() -> None:
    new = {"metadata": {"name": "e"}, "spec": {"data": {}}}
    deleting = {"metadata": {"name": "e", "deletionTimestamp": "T"}, "spec": {"data": {"a": 1}}}

    created = stamp("CREATE", None, new, "alice", "T1")
    ignored = stamp("UPDATE", new, deleting, "bob", "T2")

    assert created.annotations == {CHANGED_BY: "alice", CHANGED_AT: "T1"}
    assert created.finalizers == [FINALIZER]
    assert (ignored.annotations, ignored.finalizers) == ({}, None)


# ------------------------------------------------------------------- configurations & TLS


def test_every_webhook_fails_closed_quickly_without_side_effects() -> None:
    documents = webhook_configurations(lambda path: {"url": f"https://127.0.0.1:9443/{path}"})

    webhooks = [w for d in documents for w in d["webhooks"]]
    assert [d["kind"] for d in documents] == [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    assert len(webhooks) == len(HOOKS)
    for webhook in webhooks:
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["sideEffects"] == "None"
        assert webhook["timeoutSeconds"] == TIMEOUT_SECONDS <= 10
        assert webhook["rules"][0]["operations"] == ["CREATE", "UPDATE"]


def test_webhooks_directory_holds_what_the_code_generates() -> None:
    for filename, text in templates().items():
        assert (REPO / "webhooks" / filename).read_text() == text, (
            f"webhooks/{filename} is stale; regenerate it (see webhooks/README.md)"
        )


def test_generated_certificate_is_reused_across_restarts(tmp_path: Path) -> None:
    first = serving_certificate(tmp_path, "127.0.0.1")
    again = serving_certificate(tmp_path, "127.0.0.1")
    other_host = serving_certificate(tmp_path, "10.1.2.3")

    assert first.generated and first == again
    cert = x509.load_pem_x509_certificate(other_host.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)


def test_mounted_certificate_is_used_as_is(tmp_path: Path) -> None:
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_text("mounted")

    mounted = serving_certificate(tmp_path, "0.0.0.0")

    assert not mounted.generated
    assert (mounted.ca.name, mounted.cert.name, mounted.key.name) == (
        "ca.crt",
        "tls.crt",
        "tls.key",
    )


# ------------------------------------------------------------------------------- hypothesis

keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "\x00", "a.b", "$ref", "db", "poolSize", "ü", "🚀", "\ud800"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=30,
)
names = st.sampled_from(["api", "base", "payments", "loop", "", "UPPER", "a" * 300])
schemas_strategy = st.one_of(
    json_values,
    st.sampled_from(
        [
            PAYMENTS,
            {"$ref": "https://example.com/x.json"},
            {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
            {"type": "string", "pattern": "^(a+)+$"},
            {"patternProperties": {"(a|a)*b": {"type": "integer"}}},
            {"pattern": "(?<=x)y"},
            {"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 1},
        ]
    ),
)
entry_specs = st.fixed_dictionaries(
    {},
    optional={
        "schemaRef": st.one_of(json_values, st.fixed_dictionaries({"name": names})),
        "inherits": st.one_of(
            json_values, st.lists(st.fixed_dictionaries({"name": names}), max_size=3)
        ),
        "data": json_values,
        "target": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "format": st.sampled_from(["json", "yaml", "env", "properties", "files", "x"]),
                    "namespaces": st.lists(st.text(max_size=70), max_size=3),
                    "name": st.text(max_size=10),
                },
            ),
        ),
    },
)


def answers(violations: object) -> bool:
    return isinstance(violations, list) and all(isinstance(v, Violation) for v in violations)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.one_of(entry_specs, json_values),
    entries=st.dictionaries(names, entry_specs, max_size=3),
    schemas=st.dictionaries(names, st.fixed_dictionaries({"schema": schemas_strategy}), max_size=2),
)
def test_check_entry_always_answers(spec: Any, entries: Any, schemas: Any) -> None:
    assert answers(check_entry("ns", "api", spec, entries, schemas))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schema=schemas_strategy,
    compatibility=st.sampled_from([None, "Backward", "None", "Sideways"]),
    entries=st.dictionaries(names, entry_specs, max_size=3),
    stored=st.one_of(st.none(), schemas_strategy),
)
def test_check_schema_change_always_answers(
    schema: Any, compatibility: str | None, entries: Any, stored: Any
) -> None:
    schemas = {} if stored is None else {"payments": schema_spec(stored)}
    assert answers(
        check_schema_change("ns", "payments", schema_spec(schema, compatibility), entries, schemas)
    )


@settings(max_examples=300, deadline=None)
@given(
    spec=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["state", "variants", "defaultVariant", "targeting", "target"]),
            json_values,
        ),
    )
)
def test_check_flag_always_answers(spec: Any) -> None:
    assert answers(check_flag(spec))


def test_new_objects_are_stored_with_ferrys_finalizer_and_updates_leave_finalizers_alone() -> None:
    new = {"metadata": {"name": "e", "finalizers": ["example.com/keep"]}, "spec": {}}

    assert finalizers_on_create("CREATE", new) == ["example.com/keep", "ferry.dev/cleanup"]
    assert finalizers_on_create("CREATE", {"metadata": {"name": "e"}}) == ["ferry.dev/cleanup"]
    assert (
        finalizers_on_create("CREATE", {"metadata": {"finalizers": ["ferry.dev/cleanup"]}}) is None
    )
    # Removing it is how a deleted object is let go; an update must never put it back.
    assert finalizers_on_create("UPDATE", {"metadata": {"finalizers": []}}) is None


# ------------------------------------------------------------------ where a check may run


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"n": value}
    return value


def test_a_small_entry_with_a_flat_schema_is_cheap_to_check() -> None:
    flat = {"s": {"schema": PAYMENTS}}  # nested properties: each subschema applies once
    spec = {"schemaRef": {"name": "s"}, "data": {"db": {"host": "a"}}}
    assert cheap_to_check(spec, {}, flat)
    assert cheap_to_check({"data": {"a": 1}, "target": {"format": "env"}}, {}, {})


@pytest.mark.parametrize(
    ("spec", "bases", "why"),
    [
        ({"data": {"a": 1}, "target": {"format": "yaml"}}, {}, "a slower format"),
        ({"data": {str(i): i for i in range(CHEAP_VALUES + 1)}}, {}, "too many values"),
        ({"data": {"a": [0] * (CHEAP_VALUES + 1)}}, {}, "too many values in a list"),
        ({"data": {"a": "x" * (CHEAP_CHARS + 1)}}, {}, "too many characters"),
        ({"data": {"x" * (CHEAP_CHARS + 1): 1}}, {}, "too many characters in a key"),
        ({"data": nested(CHEAP_DEPTH)}, {}, "nested too deeply"),
        (
            {"inherits": [{"name": "b"}], "data": {}},
            {"b": {"data": {"a": "x" * CHEAP_CHARS}}},
            "bases count too",
        ),
    ],
)
def test_what_may_cost_more_is_not_cheap(spec: Any, bases: Any, why: str) -> None:
    assert not cheap_to_check(spec, bases, {}), why


def measured(value: Any, level: int = 1) -> tuple[int, int, int]:
    """(values, characters, deepest level holding a container) of ``value``, as
    ``cheap_to_check`` bounds them: the oracle for its walk."""
    if isinstance(value, str):
        return 0, len(value), 0
    if isinstance(value, dict | list):
        children = list(value.values()) if isinstance(value, dict) else value
        keys = sum(len(k) for k in value) if isinstance(value, dict) else 0
        below = [measured(child, level + 1) for child in children]
        return (
            len(children) + sum(b[0] for b in below),
            keys + sum(b[1] for b in below),
            max([level, *(b[2] for b in below)]),
        )
    return 0, 0, 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(json_values, max_size=3),
    count=st.integers(0, 40),
    chars=st.integers(0, 60),
    depth=st.integers(0, 6),
)
def test_the_size_walk_allows_exactly_what_its_bounds_allow(
    values: list[Any], count: int, chars: int, depth: int
) -> None:
    found = [measured(value) for value in values]
    expected = (
        sum(f[0] for f in found) <= count
        and sum(f[1] for f in found) <= chars
        and max([0, *(f[2] for f in found)]) <= depth
    )
    assert _within(values, count, chars, depth) is expected


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
        {"properties": {"a": {"items": {"type": "string"}}}},
        {"properties": {"a": {"properties": {"b": {"$ref": "#/$defs/b"}}}}, "$defs": {"b": {}}},
        {"properties": {"a": {"uniqueItems": True}}},
        {"properties": {"a": {"enum": list(range(65))}}},
        {"properties": {"a": {"const": {"nested": [1]}}}},
        {"properties": {"a": {"pattern": "a" * 513}}},
        {"properties": {"a": {"description": "d" * (CHEAP_SCHEMA_CHARS + 1)}}},
        {"properties": {"a": {"default": list(range(CHEAP_SCHEMA_VALUES + 1))}}},
        {"properties": {"a": {}}, "additionalProperties": {"type": "string"}},
        {"properties": {"a": {}}, "patternProperties": {"^x": {"type": "string"}}},
        {"properties": {f"p{i}": {} for i in range(1025)}},
        {"type": "object"},
    ],
)
def test_a_schema_with_nested_or_repeated_work_or_too_large_to_compile_is_not_cheap(
    schema: dict[str, Any],
) -> None:
    spec = {"schemaRef": {"name": "s"}, "data": {"a": 1}}
    assert not cheap_to_check(spec, {}, {"s": {"schema": schema}})
