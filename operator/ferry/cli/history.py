"""`ferry history|diff|rollback|export|restore|audit`: thin commands over ``ferry.history``.

Each command parses flags, calls one function of the history service and prints: a table for
people by default, ``-o json|yaml`` for scripts. They need only a kubeconfig: history is read
from Ferry's aggregated API (``history.ferry.dev``) through the Kubernetes API server. Errors
are ``error: <message>`` on stderr and exit status 1 (``ferry.cli.errors``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ferry import history as service
from ferry.cli.errors import CliError, reported
from ferry.cli.manifests import read_manifests
from ferry.cli.options import identity, identity_options
from ferry.cli.present import (
    audit_records,
    audit_table,
    dump_documents,
    history_table,
    parse_ref,
    parse_time,
    revision_record,
    to_yaml,
)
from ferry.history.service import WRITTEN, Restored, RestoreFailed

F = TypeVar("F", bound=Callable[..., Any])
KIND_CHOICE = click.Choice(service.HISTORY_KINDS)
OUTPUT = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
)


def _session_options(command: F) -> F:
    """The caller's identity, as kubectl takes it: history is read through the Kubernetes API
    (Ferry's aggregated history API), so no database address or credential is needed."""
    return identity_options(command)


def _session(kw: dict[str, Any]) -> service.Session:
    return service.Session(identity(kw))


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
@reported
def history(ref: str, kind: str | None, output: str, **kw: Any) -> None:
    """Revisions of one object: number, time, user, reason and hash."""
    namespace, name = parse_ref(ref)
    revisions = service.history(_session(kw), namespace, name, kind)
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
        raise CliError(f'"{value}" is not a revision number (or "live")') from None
    return number


@click.command()
@click.argument("ref", metavar="NS/NAME")
@click.argument("old", metavar="A")
@click.argument("new", metavar="[B]", required=False)
@click.option("--kind", type=KIND_CHOICE, default=None)
@_session_options
@reported
def diff(ref: str, old: str, new: str | None, kind: str | None, **kw: Any) -> None:
    """Unified diff of the resolved content of revision A and revision B (default: the live
    object)."""
    namespace, name = parse_ref(ref)
    first = _revision_arg(old)
    if first is None:
        raise CliError(f'"{old}" is not a revision number')
    result = service.diff(_session(kw), namespace, name, first, _revision_arg(new), kind)
    if result.text:
        click.echo(result.text)
    for line in result.secret_changes:  # references and versions only: never a value
        click.echo(line)
    if not result.text and not result.secret_changes:
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
@reported
def rollback(
    ref: str, to: int, reason: str | None, kind: str | None, wait_seconds: float, **kw: Any
) -> None:
    """Write revision N's spec back into the object; it becomes a new revision."""
    namespace, name = parse_ref(ref)
    result = service.rollback(
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
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE, readable by you only (mode 0600). Default: standard output.",
)
@click.option(
    "--include-secrets",
    is_flag=True,
    help="Also the values of the entries' Secrets, read now from the cluster as you (needs "
    "get on Secrets in each namespace). `ferry restore` skips them.",
)
@_session_options
@reported
def export(
    at: str | None, namespace: str | None, path: str | None, include_secrets: bool, **kw: Any
) -> None:
    """YAML of every ConfigSchema, ConfigEntry and FeatureFlag as it was at a moment, rebuilt
    from the revision store. `ferry restore` applies it."""
    moment = parse_time(at, _now()) if at else None
    documents = service.export(_session(kw), moment, namespace, include_secrets=include_secrets)
    text = dump_documents(documents)
    if path:
        widened = write_private(path, text)
        if widened is not None:
            click.echo(f"warning: {path} was mode {widened:04o}; it is now 0600", err=True)
    else:
        click.echo(text, nl=False)


def write_private(path: str, text: str) -> int | None:
    """Write ``text`` to ``path`` readable by its owner only (0600), whatever the umask: an export
    names Vault paths, and with --include-secrets holds Secret values. A file already there with
    wider permissions is tightened before anything is written into it (its former mode is
    returned, for a warning); one that cannot be made private is refused and left as it was."""
    try:
        # No O_TRUNC: a file refused below must keep its content. 0600 applies when creating.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        widened = _make_private(fd, path, info) if regular else None
        try:
            if regular:
                os.ftruncate(fd, 0)
            out.write(text)
            out.flush()
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc.strerror}") from None
    return widened


def _make_private(fd: int, path: str, info: os.stat_result) -> int | None:
    """Mode 0600 on an existing regular file; its former mode when that was wider, else None.
    (Pipes and devices, e.g. ``-f >(gpg -e …)``, are written as they are: nothing rests there.)"""
    if info.st_uid != os.geteuid():
        # Its owner can chmod it back at any time: no mode makes it private to us.
        raise CliError(
            f"{path} belongs to another user (uid {info.st_uid}), who could read the export: "
            "remove it or choose another file"
        )
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return None
    try:
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise CliError(
            f"cannot make {path} readable by you only (it is mode {mode:04o}): {exc.strerror}"
        ) from None
    return mode


@click.command()
@click.argument("path", metavar="FILE")
@identity_options
@reported
def restore(path: str, **kw: Any) -> None:
    """Give each object of an export (FILE, or - for standard input) its exported spec: missing
    objects are created, others have their spec replaced. Stops at the first refusal."""
    documents = [d.body for d in read_manifests([path])]
    try:
        outcomes = service.restore(_session(kw), documents)
    except RestoreFailed as exc:
        _print_restore(exc.outcomes)
        raise
    _print_restore(outcomes)


#: How each outcome of a restore reads, after "KIND NS/NAME".
RESTORE_WORDS = {
    "created": "restored",
    "updated": "restored",
    "unchanged": "unchanged: it already has the exported spec",
    "refused": "refused",
    "conflict": "not restored, changed meanwhile",
    "not attempted": "not attempted",
}


def _print_restore(outcomes: list[Restored]) -> None:
    for o in outcomes:
        line = f"{o.ref} {RESTORE_WORDS[o.outcome]}"
        click.echo(f"{line}: {o.message}" if o.message else line)
    written = sum(1 for o in outcomes if o.outcome in WRITTEN)
    counts = [f"{written} object(s) restored"]
    for outcome, word in (
        ("unchanged", "unchanged"),
        ("refused", "refused"),
        ("conflict", "changed meanwhile"),
        ("not attempted", "not attempted"),
    ):
        if number := sum(1 for o in outcomes if o.outcome == outcome):
            counts.append(f"{number} {word}")
    click.echo(", ".join(counts))


@click.command()
@click.option("--since", default=None, help="ISO 8601 time or age (2h, 7d).")
@click.option("--user", default=None, help="Only what this user did.")
@click.option("-n", "--namespace", default=None, help="Default: all namespaces.")
@click.option("--limit", type=int, default=1000, show_default=True, help="Newest N rows.")
@OUTPUT
@_session_options
@reported
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
    records = service.audit(_session(kw), since=moment, user=user, namespace=namespace, limit=limit)
    if output == "table":
        click.echo(audit_table(records))
    else:
        _emit(audit_records(records), output)


COMMANDS = (history, diff, rollback, export, restore, audit)
