"""`ferry history|diff|rollback|export|restore|validate|audit`: thin wrappers over ferry.history.

Each command parses flags, calls one function of the Python API and prints: a table for people by
default, ``-o json|yaml`` for scripts. Any ``HistoryError`` becomes ``error: <message>`` on
stderr and exit status 1.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
import yaml

from ferry.adapters.store import StoreUnavailable
from ferry.history import api
from ferry.history.cluster import Identity
from ferry.history.offline import findings_json, load_documents, validate_file
from ferry.history.present import (
    HistoryError,
    dump_documents,
    format_time,
    history_table,
    parse_ref,
    parse_time,
    revision_record,
    table,
    to_yaml,
)

F = TypeVar("F", bound=Callable[..., Any])
KIND_CHOICE = click.Choice(api.HISTORY_KINDS)
OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
)


def _session_options(command: F) -> F:
    """The caller's identity (as kubectl takes it) and the revision store's address."""
    options = [
        click.option("--database-url", envvar="FERRY_DATABASE_URL", required=True),
        click.option("--kubeconfig", envvar="KUBECONFIG", default=None),
        click.option("--context", default=None, help="kubeconfig context (default: current)."),
        click.option("--as", "as_user", default=None, help="Impersonate this user."),
        click.option("--as-group", "as_groups", multiple=True, help="Impersonate this group."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _session(kw: dict[str, Any]) -> api.Session:
    identity = Identity(
        kubeconfig=kw.pop("kubeconfig"),
        context=kw.pop("context"),
        as_user=kw.pop("as_user"),
        as_groups=tuple(kw.pop("as_groups")),
    )
    return api.Session(kw.pop("database_url"), identity)


def _errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (HistoryError, StoreUnavailable) as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


def _emit(value: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(value, indent=2, ensure_ascii=False))
    else:
        click.echo(to_yaml(value), nl=False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------- commands


@click.command()
@click.argument("ref", metavar="NS/NAME")
@click.option("--kind", type=KIND_CHOICE, default=None, help="Default: the one with history.")
@OUTPUT
@_session_options
@_errors
def history(ref: str, kind: str | None, output: str, **kw: Any) -> None:
    """Revisions of one object: number, time, user, reason and hash."""
    namespace, name = parse_ref(ref)
    revisions = api.history(_session(kw), namespace, name, kind)
    if output == "table":
        click.echo(history_table(revisions))
    else:
        _emit([revision_record(r) for r in revisions], output)


def _revision_arg(value: str | None) -> int | None:
    if value is None or value == "live":
        return None
    try:
        number = int(value)
    except ValueError:
        raise HistoryError(f'"{value}" is not a revision number (or "live")') from None
    return number


@click.command()
@click.argument("ref", metavar="NS/NAME")
@click.argument("old", metavar="A")
@click.argument("new", metavar="[B]", required=False)
@click.option("--kind", type=KIND_CHOICE, default=None)
@_session_options
@_errors
def diff(ref: str, old: str, new: str | None, kind: str | None, **kw: Any) -> None:
    """Unified diff of the resolved content of revision A and revision B (default: the live
    object)."""
    namespace, name = parse_ref(ref)
    first = _revision_arg(old)
    if first is None:
        raise HistoryError(f'"{old}" is not a revision number')
    result = api.diff(_session(kw), namespace, name, first, _revision_arg(new), kind)
    if result.text:
        click.echo(result.text)
    else:
        click.echo(f"no differences between {result.old_label} and {result.new_label}", err=True)


@click.command()
@click.argument("ref", metavar="NS/NAME")
@click.option("--to", "to", type=int, required=True, help="The revision to go back to.")
@click.option("--reason", default=None, help='Appended to "rollback to N" in the new revision.')
@click.option("--kind", type=KIND_CHOICE, default=None)
@click.option(
    "--wait",
    "wait_seconds",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the operator to record the new revision (0: do not wait).",
)
@_session_options
@_errors
def rollback(
    ref: str, to: int, reason: str | None, kind: str | None, wait_seconds: float, **kw: Any
) -> None:
    """Write revision N's spec back into the object; it becomes a new revision."""
    namespace, name = parse_ref(ref)
    result = api.rollback(
        _session(kw), namespace, name, to, reason=reason, kind=kind, wait_seconds=wait_seconds
    )
    what = f"{result.kind} {namespace}/{name}"
    if not result.written:
        click.echo(f"{what} already has the spec of revision {to}: nothing to roll back")
    elif result.same_content_as is not None:
        click.echo(
            f"{what}: spec of revision {to} written back; its content equals the current "
            f"revision {result.same_content_as}, so no new revision is recorded"
        )
    elif result.new_revision is not None:
        click.echo(
            f"{what} rolled back to revision {to}: recorded as revision {result.new_revision}"
        )
    else:
        click.echo(
            f"{what}: spec of revision {to} written back; the operator has not recorded the new "
            f"revision yet (check `ferry history {namespace}/{name}` later)"
        )
    if result.gitops is not None:
        g = result.gitops
        owner = f" ({g.owner})" if g.owner else ""
        click.echo(
            f"warning: {what} is managed by {g.tool}{owner}, seen in field manager/marker "
            f'"{g.manager}": its next sync will undo this rollback.\n{g.advice}\n'
            f"spec to commit:\n{to_yaml({'spec': result.spec})}",
            err=True,
            nl=False,
        )


@click.command()
@click.option("--at", "at", default=None, help="ISO 8601 time or age (2h, 7d). Default: now.")
@click.option("-n", "--namespace", default=None, help="Default: all namespaces.")
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False), default=None)
@_session_options
@_errors
def export(at: str | None, namespace: str | None, path: str | None, **kw: Any) -> None:
    """YAML of every ConfigSchema, ConfigEntry and FeatureFlag as it was at a moment, rebuilt
    from the revision store. `ferry restore` applies it."""
    moment = parse_time(at, _now()) if at else None
    text = dump_documents(api.export(_session(kw), moment, namespace))
    if path:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        click.echo(text, nl=False)


@click.command()
@click.argument("path", metavar="FILE")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None)
@click.option("--context", default=None)
@click.option("--as", "as_user", default=None)
@click.option("--as-group", "as_groups", multiple=True)
@_errors
def restore(
    path: str, kubeconfig: str | None, context: str | None, as_user: str | None, as_groups: Any
) -> None:
    """Server-side apply an export (FILE, or - for standard input)."""
    identity = Identity(kubeconfig, context, as_user, tuple(as_groups))
    applied = api.restore(api.Session("", identity), load_documents(path))
    for kind, namespace, name in applied:
        click.echo(f"{kind} {namespace}/{name} restored")
    click.echo(f"{len(applied)} object(s) restored")


@click.command()
@click.option("-f", "--file", "files", multiple=True, required=True, help="Manifests (- = stdin).")
@click.option("--schema", "schemas", multiple=True, help="ConfigSchemas or a bare JSON Schema.")
@OUTPUT
@_errors
def validate(files: tuple[str, ...], schemas: tuple[str, ...], output: str) -> None:
    """Offline validation with the admission webhook's checks and messages; exit 1 if invalid."""
    findings = validate_file(files, schemas)
    if output == "json":
        click.echo(findings_json(findings))
    elif output == "yaml":
        click.echo(yaml.safe_dump(json.loads(findings_json(findings)), sort_keys=False), nl=False)
    else:
        for finding in findings:
            click.echo(finding.message)
    if not all(f.valid for f in findings):
        raise SystemExit(1)


@click.command()
@click.option("--since", default=None, help="ISO 8601 time or age (2h, 7d).")
@click.option("--user", default=None, help="Only what this user did.")
@click.option("-n", "--namespace", default=None, help="Default: all namespaces.")
@click.option("--limit", type=int, default=1000, show_default=True, help="Newest N rows.")
@OUTPUT
@_session_options
@_errors
def audit(
    since: str | None,
    user: str | None,
    namespace: str | None,
    limit: int,
    output: str,
    **kw: Any,
) -> None:
    """The audit trail: created, updated, deleted, rolled back, drift corrected, refused..."""
    moment = parse_time(since, _now()) if since else None
    records = api.audit(_session(kw), since=moment, user=user, namespace=namespace, limit=limit)
    if output != "table":
        _emit(
            [
                {
                    "at": format_time(r.at),
                    "action": r.action,
                    "kind": r.kind,
                    "namespace": r.namespace,
                    "name": r.name,
                    "user": r.username,
                    "revision": r.revision,
                    "details": r.details,
                }
                for r in records
            ],
            output,
        )
        return
    click.echo(
        table(
            ("TIME", "ACTION", "OBJECT", "USER", "REVISION", "DETAILS"),
            (
                (
                    format_time(r.at),
                    r.action,
                    f"{r.kind} {r.namespace}/{r.name}",
                    r.username or "-",
                    r.revision if r.revision is not None else "-",
                    _details(r.details),
                )
                for r in records
            ),
        )
    )


def _details(details: dict[str, Any]) -> str:
    shown = {k: v for k, v in details.items() if v is not None and k != "hash"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"


COMMANDS = (history, diff, rollback, export, restore, validate, audit)
