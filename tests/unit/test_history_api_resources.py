"""The history API's pure parts: objects both ways, names, Tables, Accept negotiation, selectors
and whom the front proxy's headers are believed from (issue 12, decision 0021)."""

from __future__ import annotations

import datetime as dt

import pytest

from ferry.adapters.kube_auth import Access, Unauthenticated, User
from ferry.adapters.postgres.records import AuditRecord, Revision
from ferry.history import resources as R
from ferry.historyapi.frontproxy import FrontProxy
from ferry.historyapi.server import _audit_query, _revision_query

AT = dt.datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=dt.UTC)
REVISION = Revision(
    kind="ConfigEntry",
    namespace="payments",
    name="api.v2",
    uid="u-1",
    revision=3,
    hash="sha256:abc",
    content={"db": {"poolSize": 30}},
    spec={"data": {"db": {"poolSize": 30}}},
    changed_by="alice",
    reason="black friday",
    created_at=AT,
)


def test_a_revision_round_trips_through_its_object() -> None:
    obj = R.revision_object(REVISION)
    assert obj["metadata"]["name"] == "configentry.api.v2.3"
    assert obj["metadata"]["labels"] == {
        "ferry.dev/entry-name": "api.v2",
        "ferry.dev/revision": "3",
    }
    assert R.revision_from_object(obj) == REVISION
    assert R.parse_revision_name("configentry.api.v2.3") == ("ConfigEntry", "api.v2", 3)
    for bad in ("api.3", "configentry.api", "configentry..3", "secret.x.1", "configentry.x.y"):
        assert R.parse_revision_name(bad) is None, bad


def test_a_continue_token_says_where_the_page_ended_and_a_foreign_one_is_refused() -> None:
    token = R.continue_token(REVISION)
    assert R.parse_continue(token) == ("payments", "ConfigEntry", "api.v2", 3)
    for bad in ("nope", R.continue_token(REVISION)[:-4], "WyJhIiwgMV0="):  # last: ["a", 1]
        with pytest.raises(ValueError, match="is not valid"):
            R.parse_continue(bad)


def test_an_audit_row_round_trips_through_its_object() -> None:
    row = AuditRecord(
        id=42,
        at=AT,
        action="updated",
        kind="FeatureFlag",
        namespace="shop",
        name="checkout",
        uid=None,
        username="system:serviceaccount:ci:deployer",
        revision=7,
        details={"reason": "ramp to 50%"},
    )
    assert R.audit_from_object(R.audit_object(row)) == row


def test_the_table_has_kubectl_columns_and_metadata_rows() -> None:
    now = AT + dt.timedelta(hours=5, minutes=3)
    table = R.table(R.REVISIONS, [R.revision_object(REVISION)], now, "Metadata")
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Kind", "Entry", "Revision", "User", "Reason", "Hash", "Age",
    ]  # fmt: skip
    (row,) = table["rows"]
    assert row["cells"] == [
        "configentry.api.v2.3", "ConfigEntry", "api.v2", 3, "alice", "black friday",
        "sha256:abc", "5h",
    ]  # fmt: skip
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "payments"
    assert (
        "object" not in R.table(R.REVISIONS, [R.revision_object(REVISION)], now, "None")["rows"][0]
    )


@pytest.mark.parametrize(
    ("accept", "table"),
    [
        ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
         "g=meta.k8s.io,application/json", True),
        ("application/json", False),
        ("application/json, application/json;as=Table;v=v1;g=meta.k8s.io", False),
        ("", False),
    ],
)  # fmt: skip
def test_a_table_is_sent_when_kubectl_asks_for_one_first(accept: str, table: bool) -> None:
    assert R.wants_table(accept) is table


def test_field_and_label_selectors_become_queries() -> None:
    query = _revision_query("payments", "spec.entry=api,spec.kind==ConfigEntry", None)
    assert (query.namespace, query.name, query.kind) == ("payments", "api", "ConfigEntry")
    assert _revision_query(None, None, "ferry.dev/entry-name=worker").name == "worker"
    by_name = _revision_query(None, "metadata.name=configschema.payments.1", None)
    assert (by_name.kind, by_name.name, by_name.revision) == ("ConfigSchema", "payments", 1)
    moment = _revision_query(None, "currentAt=2026-03-01T12:00:00Z", None)
    assert moment.current_at == dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    audit = _audit_query("shop", "spec.kind!=ConfigSchema,spec.user=bob", None, 10)
    assert (audit.excluded_kinds, audit.username, audit.limit) == (("ConfigSchema",), "bob", 10)

    for fields, message in (
        ("spec.colour=red", 'field label not supported: "spec.colour"'),
        ("spec.entry!=api", "is not supported here"),
        ("spec.revision=three", "is not a number"),
        ("currentAt=yesterday", "is not an RFC 3339 time"),
        ("metadata.namespace=other", "contradicts the namespace"),
        ("spec.entry", "use key=value"),
    ):
        with pytest.raises(R.BadSelector, match=message):
            _revision_query("payments", fields, None)


PROXY = FrontProxy(
    ca_pem="",
    allowed_names=("front-proxy-client",),
    username_headers=("X-Remote-User",),
    group_headers=("X-Remote-Group",),
    extra_prefixes=("X-Remote-Extra-",),
)
PROXY_CERT = {"subject": ((("commonName", "front-proxy-client"),),)}


class Headers(list[tuple[str, str]]):
    """Repeated headers, as aiohttp's multidict gives them."""

    def get(self, key: str, default: str | None = None) -> str | None:
        return next((v for k, v in self if k.lower() == key.lower()), default)

    def __getitem__(self, key):  # type: ignore[no-untyped-def, override]
        return self.get(key)

    def items(self):  # type: ignore[no-untyped-def]
        return list(self)


def test_the_front_proxy_headers_are_believed_only_with_its_certificate() -> None:
    headers = Headers(
        [
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "dev"),
            ("x-remote-group", "system:authenticated"),
            ("X-Remote-Extra-Scopes%2Fread", "a"),
        ]
    )
    user = PROXY.user(PROXY_CERT, headers)
    assert user == User(
        "alice", groups=("dev", "system:authenticated"), extra=(("scopes/read", ("a",)),)
    )
    with pytest.raises(Unauthenticated, match="no client certificate"):
        PROXY.user(None, headers)
    with pytest.raises(Unauthenticated, match="not one of the allowed"):
        PROXY.user({"subject": ((("commonName", "ferry-admin"),),)}, headers)
    with pytest.raises(Unauthenticated, match="no user name"):
        PROXY.user(PROXY_CERT, Headers([("X-Remote-Group", "system:masters")]))


def test_the_configmap_without_a_front_proxy_ca_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="--requestheader-client-ca-file"):
        FrontProxy.from_configmap({"client-ca-file": "x"})
    proxy = FrontProxy.from_configmap(
        {
            "requestheader-client-ca-file": "PEM",
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        }
    )
    assert proxy == FrontProxy(
        "PEM",
        ("front-proxy-client",),
        ("X-Remote-User",),
        ("X-Remote-Group",),
        ("X-Remote-Extra-",),
    )


def test_an_access_question_names_another_group_and_the_cluster_scope() -> None:
    access = Access("list", "configrevisions", "", group=R.GROUP)
    assert access.describe() == "list configrevisions.history.ferry.dev in all namespaces"
    assert Access("get", "configentries", "shop").describe() == (
        "get configentries.ferry.dev in namespace shop"
    )
