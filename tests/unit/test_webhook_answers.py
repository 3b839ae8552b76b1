"""What the webhooks answer (ferry.webhooks.handlers.Admission), without a server: the stamp's
JSON Patch does what the stamp says when the API server applies it, and a refusal names the
object and the field. (The same answers through a real API server: tests/integration.)"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.domain import kinds
from ferry.domain.labels import CHANGED_AT, CHANGED_BY, FINALIZER
from ferry.reconcile.world import World
from ferry.settings import VaultSettings
from ferry.webhooks.configurations import STAMP_ENTRY, VALIDATE_FLAG, Hook
from ferry.webhooks.handlers import Admission, Request, stamp_patch

AT = "2026-11-27T21:00:00Z"


def admission() -> Admission:
    world = World(
        entries={}, schemas={}, flags={}, namespaces={}, configmaps={}, secrets={}, workloads=()
    )
    return Admission(world, VaultSettings())


def review(hook: Hook, operation: str, new: dict[str, Any], old: dict[str, Any] | None = None):
    gvk = {"group": kinds.GROUP, "version": kinds.VERSION}
    request = {
        "uid": "u-1",
        "kind": {**gvk, "kind": hook.kind.kind},
        "resource": {**gvk, "resource": hook.kind.plural},
        "operation": operation,
        "userInfo": {"username": "alice"},
        "object": new,
        "oldObject": old,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def obj(annotations: dict[str, str] | None = None, spec: Any = None, **meta: Any) -> dict:
    metadata: dict[str, Any] = {"name": "api", "namespace": "payments", **meta}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec if spec is not None else {"data": {"a": 1}}}


async def test_a_new_entry_is_stamped_with_its_author_and_ferrys_finalizer() -> None:
    new = obj({"team": "payments"}, finalizers=["someone/else"])
    answer = await admission()(review(STAMP_ENTRY, "CREATE", new), webhook=STAMP_ENTRY.path)

    response = answer["response"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patched = jsonpatch.apply_patch(new, json.loads(base64.b64decode(response["patch"])))
    assert patched["metadata"]["annotations"]["team"] == "payments"
    assert patched["metadata"]["annotations"][CHANGED_BY] == "alice"
    assert patched["metadata"]["finalizers"] == ["someone/else", FINALIZER]


async def test_an_update_that_leaves_spec_alone_needs_no_patch() -> None:
    stamped = {CHANGED_BY: "bob", CHANGED_AT: AT}
    old = obj(dict(stamped), finalizers=[FINALIZER])
    new = obj({**stamped, "label": "x"}, finalizers=[FINALIZER])
    answer = await admission()(review(STAMP_ENTRY, "UPDATE", new, old), webhook=STAMP_ENTRY.path)
    assert answer["response"] == {"uid": "u-1", "allowed": True}


async def test_an_invalid_flag_is_refused_naming_the_object_and_the_field() -> None:
    flag = obj(spec={"variants": {"on": True}, "defaultVariant": "off"})
    answer = await admission()(review(VALIDATE_FLAG, "CREATE", flag), webhook=VALIDATE_FLAG.path)
    response = answer["response"]
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["message"].startswith("FeatureFlag payments/api is invalid:")
    assert "spec.defaultVariant" in response["status"]["message"]


_annotation_keys = st.sampled_from([CHANGED_BY, CHANGED_AT, "team", "a/b~c"])
_annotations = st.none() | st.dictionaries(_annotation_keys, st.text(max_size=3), max_size=4)


@given(
    operation=st.sampled_from(["CREATE", "UPDATE"]),
    old_annotations=_annotations,
    new_annotations=_annotations,
    spec_changed=st.booleans(),
    finalizers=st.none() | st.lists(st.sampled_from(["x/y", FINALIZER]), max_size=2, unique=True),
)
@settings(max_examples=300, deadline=None)
def test_the_stamp_patch_applied_leaves_exactly_what_the_stamp_says(
    operation: str,
    old_annotations: dict[str, str] | None,
    new_annotations: dict[str, str] | None,
    spec_changed: bool,
    finalizers: list[str] | None,
) -> None:
    """Whatever annotations the object has (none at all, some, a hand-edited stamp): applied by
    the API server, the patch leaves every other annotation, Ferry's stamp as ``stamp`` decides
    it, and on create Ferry's finalizer."""
    old = obj(old_annotations) if operation == "UPDATE" else None
    extra = {"finalizers": finalizers} if finalizers is not None else {}
    new = obj(new_annotations, spec={"data": {"b": 2}} if spec_changed else None, **extra)
    request = Request.parse(review(STAMP_ENTRY, operation, new, old)["request"])

    patched = jsonpatch.apply_patch(copy.deepcopy(new), stamp_patch(request, AT))

    after = patched["metadata"].get("annotations") or {}
    others = {k: v for k, v in (new_annotations or {}).items() if k not in (CHANGED_BY, CHANGED_AT)}
    assert {k: v for k, v in after.items() if k not in (CHANGED_BY, CHANGED_AT)} == others
    if operation == "CREATE" or spec_changed:
        assert (after.get(CHANGED_BY), after.get(CHANGED_AT)) == ("alice", AT)
    else:  # a hand edit of the stamp is put back
        before = old_annotations or {}
        assert (after.get(CHANGED_BY), after.get(CHANGED_AT)) == (
            before.get(CHANGED_BY),
            before.get(CHANGED_AT),
        )
    if operation == "CREATE":
        assert FINALIZER in patched["metadata"]["finalizers"]
