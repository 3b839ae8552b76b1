"""The history API's reading of what a caller sends (security review of decision 0021): numbers
in ASCII digits and in range, continue tokens it made itself, selectors whose requirements are
ANDed, and pages bounded in rows and bytes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import pytest

from ferry.adapters.postgres.records import AuditRecord, Revision
from ferry.history import resources as R
from ferry.historyapi import server as S
from ferry.historyapi.server import _audit_query, _revision_query

AT = dt.datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=dt.UTC)


def revision(name: str, number: int, content: object = None) -> Revision:
    return Revision(
        kind="ConfigEntry",
        namespace="shop",
        name=name,
        uid="u",
        revision=number,
        hash="sha256:x",
        content=content,
        spec={},
        changed_by=None,
        reason=None,
        created_at=AT,
    )


# ------------------------------------------------------------------------------ numbers, names


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0), ("7", 7), ("007", 7), ("2147483647", R.INT4_MAX), ("0" * 5000 + "1", 1),
        ("2147483648", None), ("99999999999", None), ("9" * 5000, None),
        ("²", None), ("٣", None), ("+1", None), ("-1", None), (" 1", None), ("1_0", None),
        ("", None), ("1e3", None),
    ],
)  # fmt: skip
def test_a_number_is_ascii_decimal_digits_within_the_column_s_range(
    text: str, value: int | None
) -> None:
    assert R.parse_number(text, R.INT4_MAX) == value


def test_a_revision_name_that_no_row_can_have_is_no_name() -> None:
    assert R.parse_revision_name("configentry.x.2147483647") == ("ConfigEntry", "x", R.INT4_MAX)
    for bad in (
        "configentry.x.²",
        "configentry.x.٣",
        "configentry.x.99999999999",
        "configentry.a\x00b.1",
        "configentry.UPPER.1",
        "configentry.a_b.1",
        "configentry." + "a" * 254 + ".1",
    ):
        assert R.parse_revision_name(bad) is None, bad


# ------------------------------------------------------------------------------ tokens


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def test_a_continue_token_that_is_not_the_server_s_own_is_a_value_error() -> None:
    deep = base64.urlsafe_b64encode(b"[" * 1500).decode()  # under the length cap
    assert len(deep) <= R.MAX_TOKEN_LENGTH
    for bad in (
        deep,
        base64.urlsafe_b64encode(b"[" * 3000).decode(),
        "A" * (R.MAX_TOKEN_LENGTH + 1),
        _token(["ns", "ConfigEntry", "a\x00b", 1]),
        _token(["ns", "ConfigEntry", "a", R.INT4_MAX + 1]),
        _token(["ns", "ConfigEntry", "a", -1]),
        _token(["ns", "ConfigEntry", "a", True]),
        _token({"after": ["2026-03-01T12:30:05Z", 1], "until": ["2026-03-01T12:30:05Z", 2]}),
        "\u00b2",
    ):
        with pytest.raises(ValueError, match="continue token"):
            R.parse_continue(bad)


def test_an_audit_token_keeps_both_keys_and_refuses_a_revision_token() -> None:
    after, until = (AT, 41), (AT + dt.timedelta(seconds=1), 99)
    assert R.parse_audit_continue(R.audit_continue_token(after, until)) == (after, until)
    for bad in (
        R.continue_token(revision("a", 1)),
        _token({"after": ["yesterday", 1], "until": ["2026-03-01T12:30:05Z", 2]}),
        _token({"after": ["2026-03-01T12:30:05Z", R.INT8_MAX + 1], "until": ["2026-03-01", 2]}),
        _token({"after": ["0001-01-01T00:00:00+01:00", 1], "until": ["2026-03-01T00:00Z", 2]}),
    ):
        with pytest.raises(ValueError, match="continue token"):
            R.parse_audit_continue(bad)


def test_a_list_is_assembled_from_items_encoded_one_at_a_time() -> None:
    items = [{"a": 1}, {"b": [1, 2]}]
    head = R.list_head(R.RESOURCES[R.REVISIONS], "tok")
    body = R.encode_with(head, "items", [R.encode(i) for i in items])
    assert json.loads(body) == R.list_object(R.RESOURCES[R.REVISIONS], items, "tok")
    assert json.loads(R.encode_with(head, "items", [])) == head | {"items": []}


# ------------------------------------------------------------------------------ selectors


@pytest.mark.parametrize(
    ("fields", "labels"),
    [
        ("metadata.name=configentry.x.1,spec.kind=ConfigSchema", None),
        ("spec.kind=ConfigSchema,metadata.name=configentry.x.1", None),
        ("spec.entry=a,spec.entry=b", None),
        ("spec.entry=a", "ferry.dev/entry-name=b"),
        (None, "team=nope,ferry.dev/revision=1"),
        (None, "ferry.dev/revision=1,team=nope"),
        ("metadata.name=secret.x.1", None),
        ("current=true,current=false", None),
    ],
)
def test_requirements_are_anded_so_contradictions_match_nothing(
    fields: str | None, labels: str | None
) -> None:
    assert _revision_query("shop", fields, labels) is None


def test_agreeing_requirements_make_one_query() -> None:
    query = _revision_query(
        "shop", "spec.entry=a,metadata.name=configentry.a.2,current=false", "ferry.dev/entry-name=a"
    )
    assert query is not None
    assert (query.kind, query.name, query.revision, query.current) == ("ConfigEntry", "a", 2, False)
    everywhere = _revision_query(None, "metadata.namespace=a,metadata.namespace=b", None)
    assert everywhere is None


@pytest.mark.parametrize(
    ("fields", "labels", "message"),
    [
        ("current=yes", None, 'current: "yes" is not true or false'),
        ("current=1", None, 'current: "1" is not true or false'),
        ("spec.revision=99999999999", None, 'spec.revision: "99999999999" is not a number'),
        ("spec.revision=²", None, "spec.revision"),
        (None, "ferry.dev/revision=99999999999", "ferry.dev/revision"),
        ("spec.entry=a\x00b", None, 'field selector "spec.entry": a NUL character'),
        (None, "ferry.dev/entry-name=\x00", 'label selector "ferry.dev/entry-name"'),
        ("currentAt=0001-01-01T00:00:00+01:00", None, "currentAt"),
        # A bad requirement is refused even after one that already matches nothing.
        ("spec.entry=a,spec.entry=b,current=maybe", None, "current"),
    ],
)
def test_values_no_row_can_hold_are_refused_naming_the_field(
    fields: str | None, labels: str | None, message: str
) -> None:
    with pytest.raises(R.BadSelector, match=re.escape(message)):
        _revision_query("shop", fields, labels)


def test_a_time_is_sent_to_postgresql_in_utc() -> None:
    query = _revision_query(None, "currentAt=2026-03-01T12:00:00+20:00", None)
    assert query is not None and query.current_at is not None
    assert query.current_at.utcoffset() == dt.timedelta(0)
    assert query.current_at == dt.datetime(2026, 2, 28, 16, tzinfo=dt.UTC)


def test_audit_selectors_are_anded_and_ids_stay_within_bigint() -> None:
    assert _audit_query("shop", "spec.kind=ConfigEntry,spec.kind=ConfigSchema", None, 5) is None
    assert _audit_query("shop", "spec.entry=a", "team=x", 5) is None
    both = _audit_query("shop", "spec.kind=ConfigEntry,spec.kind!=ConfigSchema", None, 5)
    assert both is not None and both.kinds == ("ConfigEntry",)
    assert both.excluded_kinds == ("ConfigSchema",)
    with pytest.raises(R.BadSelector, match=r"metadata\.name"):
        _audit_query("shop", "metadata.name=99999999999999999999", None, 5)
    with pytest.raises(R.BadSelector, match=r"spec\.user"):
        _audit_query("shop", "spec.user=\x00", None, 5)


# ------------------------------------------------------------------------------ pages


class Rows:
    """A list of revisions read as the reader does: after a row, at most ``count``, stopping at
    the one that brings their size (here: the encoded size) to ``max_bytes``."""

    def __init__(self, rows: list[Revision]) -> None:
        self.rows = rows
        self.start: Revision | None = None  # where the page begins: a continue token

    async def fetch(
        self, last: Revision | None, count: int, max_bytes: int
    ) -> tuple[list[Revision], bool]:
        after = last or self.start
        start = 0 if after is None else self.rows.index(after) + 1
        window = self.rows[start : start + count]
        taken, size = [], 0
        for row in window:
            if size >= max_bytes:
                break
            taken.append(row)
            size += len(encode(row))
        return taken, len(taken) < len(window) or len(window) == count


def encode(r: Revision) -> str:
    return R.encode(R.revision_object(r))


async def every_page(rows: Rows, limit: int) -> list[list[str]]:
    """Each page, following the row to continue after, as a client follows the token."""
    pages: list[list[str]] = []
    while True:
        pieces, rows.start = await S._fill(rows.fetch, encode, limit)
        pages.append(pieces)
        if rows.start is None:
            return pages


@pytest.mark.parametrize("limit", [1, 2, 15, 16, 17, 1000])
async def test_pages_of_small_rows_hold_limit_rows_and_lose_none(limit: int) -> None:
    rows = [revision("a", n, {"n": n}) for n in range(1, 41)]
    pages = await every_page(Rows(rows), limit)
    assert [len(page) for page in pages] == [min(limit, 40 - i) for i in range(0, 40, limit)]
    assert [p for page in pages for p in page] == [encode(r) for r in rows]


async def test_a_page_of_large_rows_ends_once_it_passes_the_byte_cap() -> None:
    blob = "x" * (S.PAGE_BYTES // 3)
    rows = [revision("big", n, {"blob": blob}) for n in range(1, 11)]
    pages = await every_page(Rows(rows), 500)
    assert [len(page) for page in pages] == [3, 3, 3, 1]
    for page in pages:
        assert sum(map(len, page)) < S.PAGE_BYTES + len(encode(rows[0]))
    assert [p for page in pages for p in page] == [encode(r) for r in rows]

    one_huge = [revision("huge", 1, {"blob": "x" * (2 * S.PAGE_BYTES)}), revision("huge", 2)]
    assert [len(page) for page in await every_page(Rows(one_huge), 500)] == [1, 1]


async def test_the_last_page_ends_the_list() -> None:
    rows = Rows([revision("a", n) for n in range(1, 4)])
    pieces, last = await S._fill(rows.fetch, encode, 3)
    assert (len(pieces), last) == (3, None)
    pieces, last = await S._fill(rows.fetch, encode, 2)
    assert (len(pieces), last) == (2, rows.rows[1])


def test_an_audit_row_round_trips_its_key_through_a_token() -> None:
    row = AuditRecord(
        id=7,
        at=AT,
        action="updated",
        kind="ConfigEntry",
        namespace="shop",
        name="a",
        uid=None,
        username=None,
        revision=1,
        details={},
    )
    token = R.audit_continue_token((row.at, row.id), (AT, 9))
    assert R.parse_audit_continue(token)[0] == (row.at, row.id)
