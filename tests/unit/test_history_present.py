"""Pure parts of `ferry history|diff|rollback|export`: what the user reads, without a cluster
(ferry.cli.present, ferry.history.documents, ferry.history.gitops)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml

from ferry.adapters.postgres import Revision
from ferry.cli.errors import CliError
from ferry.cli.present import dump_documents, format_time, history_table, parse_ref, parse_time
from ferry.history.documents import export_documents, render_diff
from ferry.history.gitops import detect_gitops

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def revision(
    kind: str, name: str, number: int, spec: Any, ns: str = "platform", **kw: Any
) -> Revision:
    return Revision(
        kind=kind,
        namespace=ns,
        name=name,
        uid=f"uid-{name}",
        revision=number,
        hash=kw.get("hash", "sha256:" + "ab" * 32),
        content=kw.get("content", spec),
        spec=spec,
        changed_by=kw.get("changed_by"),
        reason=kw.get("reason"),
        created_at=kw.get("created_at", NOW),
    )


# ------------------------------------------------------------------------------ parsing


def test_ref_needs_namespace_and_name() -> None:
    assert parse_ref("platform/payments-api") == ("platform", "payments-api")
    for bad in ("payments-api", "/x", "x/", "a/b/c"):
        with pytest.raises(CliError, match="is not NAMESPACE/NAME"):
            parse_ref(bad)


def test_times_are_iso_or_ages_and_naive_means_utc() -> None:
    assert parse_time("2h", NOW) == NOW - dt.timedelta(hours=2)
    assert parse_time("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_time("2025-01-02T03:04:05Z", NOW) == dt.datetime(
        2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC
    )
    assert parse_time("2025-01-02T03:04:05", NOW).tzinfo == dt.UTC
    with pytest.raises(CliError, match="neither an ISO 8601 time"):
        parse_time("yesterday", NOW)


def test_printed_times_parse_back_exactly() -> None:
    moment = dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    assert format_time(moment) == "2025-01-02T03:04:05.678901Z"
    assert parse_time(format_time(moment), NOW) == moment


# ------------------------------------------------------------------------------ output


def test_history_table_has_a_column_per_field_and_dashes_for_unknowns() -> None:
    rows = [
        revision("ConfigEntry", "a", 1, {}, changed_by="alice", reason="initial"),
        revision("ConfigEntry", "a", 2, {}, created_at=NOW + dt.timedelta(minutes=1)),
    ]
    lines = history_table(rows).splitlines()
    assert lines[0].split() == ["REVISION", "TIME", "USER", "REASON", "HASH"]
    assert lines[1].split() == [
        "1",
        "2025-03-01T12:00:00Z",
        "alice",
        "initial",
        "sha256:abababababab",
    ]
    assert lines[2].split() == ["2", "2025-03-01T12:01:00Z", "-", "-", "sha256:abababababab"]
    assert lines[0].index("USER") == lines[1].index("alice")  # columns line up


def test_diff_shows_only_real_changes_not_key_order() -> None:
    old = {"db": {"poolSize": 10, "host": "a"}, "x": [1, 2]}
    new = {"x": [1, 2], "db": {"host": "a", "poolSize": 20}}
    assert render_diff(old, new, "r1", "r2").splitlines() == [
        "--- r1",
        "+++ r2",
        "@@ -1,6 +1,6 @@",
        " db:",
        "   host: a",
        "-  poolSize: 10",
        "+  poolSize: 20",
        " x:",
        " - 1",
        " - 2",
    ]
    assert render_diff(old, dict(reversed(list(old.items()))), "a", "b") == ""


# ------------------------------------------------------------------------------ export


def test_export_orders_schemas_then_entries_bases_first_then_flags() -> None:
    revisions = [
        revision("FeatureFlag", "new-checkout", 2, {"variants": {"on": True}}),
        revision("ConfigEntry", "api", 3, {"inherits": [{"name": "defaults"}], "data": {}}),
        revision("ConfigEntry", "defaults", 1, {"inherits": [{"name": "root"}], "data": {}}),
        revision("ConfigEntry", "root", 1, {"data": {}}),
        revision("ConfigSchema", "payments", 4, {"schema": {"type": "object"}}),
    ]
    docs = export_documents(revisions, NOW)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("ConfigSchema", "payments"),
        ("ConfigEntry", "root"),
        ("ConfigEntry", "defaults"),
        ("ConfigEntry", "api"),
        ("FeatureFlag", "new-checkout"),
    ]
    api = docs[3]
    assert api == {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {
            "name": "api",
            "namespace": "platform",
            "annotations": {
                "ferry.dev/change-reason": "restore of revision 3 (state at 2025-03-01T12:00:00Z)"
            },
        },
        "spec": {"inherits": [{"name": "defaults"}], "data": {}},
    }


def test_export_keeps_vault_references_and_survives_inheritance_cycles() -> None:
    secret_ref = {"DB_PASSWORD": {"vault": {"path": "secret/data/p", "key": "password"}}}
    revisions = [
        revision("ConfigEntry", "a", 1, {"inherits": [{"name": "b"}], "secretData": secret_ref}),
        revision("ConfigEntry", "b", 1, {"inherits": [{"name": "a"}]}),
    ]
    docs = export_documents(revisions, None)
    assert sorted(d["metadata"]["name"] for d in docs) == ["a", "b"]
    assert docs[[d["metadata"]["name"] for d in docs].index("a")]["spec"]["secretData"] == (
        secret_ref
    )
    text = dump_documents(docs)
    assert list(yaml.safe_load_all(text)) == docs


# ------------------------------------------------------------------------------ GitOps


def _managed(manager: str, spec_fields: bool = True, **meta: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"f:metadata": {"f:labels": {}}}
    if spec_fields:
        fields["f:spec"] = {"f:data": {}}
    return {
        "managedFields": [
            {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:metadata": {}}},
            {"manager": manager, "operation": "Apply", "fieldsV1": fields},
        ],
        **meta,
    }


@pytest.mark.parametrize(
    ("manager", "tool"),
    [
        ("argocd-controller", "Argo CD"),
        ("argocd-application-controller", "Argo CD"),
        ("kustomize-controller", "Flux"),
        ("helm-controller", "Flux"),
        ("helm", "Helm"),
    ],
)
def test_gitops_tools_are_recognised_by_their_field_manager(manager: str, tool: str) -> None:
    found = detect_gitops(_managed(manager))
    assert found is not None
    assert (found.tool, found.manager) == (tool, manager)


def test_a_tool_that_owns_no_spec_field_will_not_undo_a_rollback() -> None:
    assert detect_gitops(_managed("argocd-controller", spec_fields=False)) is None
    assert detect_gitops(_managed("kubectl-client-side-apply")) is None
    assert detect_gitops({}) is None


def test_the_advice_names_the_application_or_release() -> None:
    argo = detect_gitops(
        _managed(
            "argocd-controller",
            annotations={"argocd.argoproj.io/tracking-id": "payments:ferry.dev/ConfigEntry:p/a"},
        )
    )
    assert argo is not None and argo.owner == "payments"
    assert "argocd app set payments --sync-policy none" in argo.advice
    flux = detect_gitops(
        _managed(
            "kustomize-controller",
            labels={
                "kustomize.toolkit.fluxcd.io/name": "apps",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
            },
        )
    )
    assert flux is not None and "flux suspend kustomization apps -n flux-system" in flux.advice
    helm = detect_gitops(
        {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": "payments"},
        }
    )
    assert helm is not None and helm.tool == "Helm" and "helm rollback payments" in helm.advice
