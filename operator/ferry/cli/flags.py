"""`ferry flags eval` and `ferry flags check-compat`: what a FeatureFlag answers, and what switching
its bucketing generation would change.

Both read the flag from the API server (KUBECONFIG) — `check-compat` also from a manifest file —
and use the same pure functions as the operator and the read API (``ferry.domain.flags``), so
"why does this user get that variant" is answered here exactly as in production.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import click
import yaml

from ferry.domain import kinds
from ferry.domain.errors import Invalid
from ferry.domain.flags import (
    DEFAULT_BUCKETING,
    Bucketing,
    Flag,
    SplitCompat,
    compare_generations,
    evaluate,
    explain_bucketing,
    parse_flag,
)
from ferry.domain.flags.context import BadAttribute, answer_json, parse_attributes

GENERATION_CHOICE = click.Choice([b.value for b in Bucketing])


@click.group()
def flags() -> None:
    """Work with FeatureFlags."""


def _split_ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise click.BadParameter("expected NAMESPACE/NAME", param_hint="NS/NAME")
    return namespace, name


def _read_flag(kubeconfig: str | None, namespace: str, name: str) -> dict[str, Any]:
    from lightkube import ApiError, Client, KubeConfig

    from ferry.adapters.kube import FeatureFlag

    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    client = Client(config)
    try:
        obj = client.get(FeatureFlag, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            raise click.ClickException(f"FeatureFlag {namespace}/{name} not found") from exc
        raise click.ClickException(f"reading FeatureFlag {namespace}/{name}: {exc}") from exc
    finally:
        client.close()
    return dict(obj.to_dict())


def _parse(namespace: str, name: str, body: dict[str, Any]) -> Flag:
    try:
        return parse_flag(name, body.get("spec") or {})
    except Invalid as exc:
        lines = "\n".join(f"  {v}" for v in exc.violations)
        raise click.ClickException(f"FeatureFlag {namespace}/{name} is invalid:\n{lines}") from exc


_BUCKETING_HELP = (
    "Answer as an OpenFeature provider of this bucketing generation would (default: the flag's "
    "own, from spec.bucketing or status.bucketing)."
)
_DEFAULT_HELP = (
    "The operator-wide default generation, used only for a flag whose spec and status name none "
    "(not reconciled yet)."
)
default_bucketing_option = click.option(
    "--default-bucketing",
    type=GENERATION_CHOICE,
    envvar="FERRY_FLAGS_DEFAULT_BUCKETING",
    default=DEFAULT_BUCKETING.value,
    show_default=True,
    help=_DEFAULT_HELP,
)


@flags.command("eval")
@click.argument("ref", metavar="NS/NAME")
@click.option("--targeting-key", default=None, help="The caller's identity (bucketing seed).")
@click.option(
    "--attr",
    "attrs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A context attribute; repeatable. VALUE is JSON if it parses, else a string "
    "(seats=12 is a number, id='\"12\"' a string); user.plan=pro nests.",
)
@click.option("--bucketing", type=GENERATION_CHOICE, default=None, help=_BUCKETING_HELP)
@default_bucketing_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Default: in-cluster.")
def eval_flag(
    ref: str,
    targeting_key: str | None,
    attrs: tuple[str, ...],
    bucketing: str | None,
    default_bucketing: str,
    output: str,
    kubeconfig: str | None,
) -> None:
    """Print the variant, value and reason the live flag NS/NAME gives this caller."""
    namespace, name = _split_ref(ref)
    try:
        attributes = parse_attributes(attrs)
    except BadAttribute as exc:
        raise click.BadParameter(str(exc), param_hint="--attr") from exc

    body = _read_flag(kubeconfig, namespace, name)
    flag = _parse(namespace, name, body)
    status = body.get("status") or {}
    generation, source = explain_bucketing(body.get("spec"), status, default_bucketing)
    if bucketing is not None:
        generation, source = Bucketing(bucketing), "--bucketing"

    revision = status.get("revision")
    answer = answer_json(
        namespace,
        name,
        evaluate(flag, targeting_key, attributes, generation),
        revision if isinstance(revision, int) else None,
        generation,
    )
    if output == "json":
        click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        return
    click.echo(f"flag:     {namespace}/{name}")
    click.echo(f"variant:  {answer['variant']}")
    click.echo(f"value:    {json.dumps(answer['value'], ensure_ascii=False)}")
    click.echo(f"reason:   {answer['reason']}")
    if "errorCode" in answer:
        click.echo(f"error:    {answer['errorCode']}")
    if "revision" in answer:
        click.echo(f"revision: {answer['revision']}")
    click.echo(f"bucketing: {generation} ({source})")


# --- check-compat -----------------------------------------------------------------------------


def sample_values(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct bucketing values in the shapes apps use as targeting keys (UUIDs,
    e-mail addresses, numeric and prefixed ids), the same on every run for one ``seed``."""
    rng = random.Random(seed)
    shapes = (
        lambda i: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        lambda i: f"user{i}@example.com",
        lambda i: str(rng.randrange(10**9)),
        lambda i: f"user-{i}",
    )
    values: dict[str, None] = {}
    i = 0
    while len(values) < count:
        values[shapes[i % len(shapes)](i)] = None
        i += 1
    return list(values)


def _manifests(stream: TextIO) -> Iterator[dict[str, Any]]:
    try:
        documents = list(yaml.safe_load_all(stream))
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{stream.name}: not YAML or JSON: {exc}") from exc
    for doc in documents:
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items or []:
            if isinstance(item, dict) and item.get("kind") == kinds.FEATURE_FLAG.kind:
                yield item


def _describe(result: SplitCompat) -> str:
    weights = " / ".join(f"{v} {w}" for v, w in result.weights)
    by = f"attribute {result.bucket_by!r}" if result.bucket_by else "targeting key"
    return f"rule {result.rule + 1}: split {weights}, bucketed by {by}"


def _report(
    namespace: str, name: str, body: dict[str, Any], values: list[str], default: str
) -> dict[str, Any]:
    flag = _parse(namespace, name, body)
    generation, source = explain_bucketing(body.get("spec"), body.get("status"), default)
    splits = compare_generations(flag, values)
    return {
        "namespace": namespace,
        "flag": name,
        "bucketing": str(generation),
        "bucketingSource": source,
        "splits": [
            {
                "rule": r.rule + 1,
                "weights": dict(r.weights),
                "bucketBy": r.bucket_by,
                "sampled": r.sampled,
                "changed": r.changed,
                "changedFraction": round(r.changed_fraction, 6),
                "expectedFraction": round(r.expected_fraction, 6),
                "moves": [{"from": a, "to": b, "count": n} for (a, b), n in r.moves.items()],
                "description": _describe(r),
            }
            for r in splits
        ],
    }


def _print_text(report: dict[str, Any]) -> None:
    click.echo(
        f"FeatureFlag {report['namespace']}/{report['flag']}: follows {report['bucketing']} "
        f"({report['bucketingSource']})"
    )
    if not report["splits"]:
        click.echo("  no split: switching bucketing generation changes no answer")
        return
    for split in report["splits"]:
        click.echo(f"  {split['description']}")
        click.echo(
            f"    {split['changedFraction']:.1%} of {split['sampled']:,} sampled values change "
            f"variant between flagd-v2 and flagd-v3 "
            f"(unrelated hashes would move {split['expectedFraction']:.1%})"
        )
        if split["moves"]:
            moves = ", ".join(f"{m['from']} → {m['to']}: {m['count']:,}" for m in split["moves"])
            click.echo(f"    {moves}")


def _read_values(stream: TextIO) -> list[str]:
    values = [line.strip() for line in stream]
    return [v for v in dict.fromkeys(values) if v]


@flags.command("check-compat")
@click.argument("ref", metavar="[NS/NAME]", required=False)
@click.option(
    "-f",
    "--file",
    "manifest",
    type=click.File("r"),
    default=None,
    help="Read FeatureFlag manifests (YAML or JSON, several documents or a List) instead of a "
    "live flag.",
)
@click.option(
    "--samples",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="How many generated bucketing values to compare.",
)
@click.option(
    "--keys-file",
    type=click.File("r"),
    default=None,
    help="Compare these bucketing values instead (one per line, e.g. real user ids).",
)
@default_bucketing_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Default: in-cluster.")
def check_compat(
    ref: str | None,
    manifest: TextIO | None,
    samples: int,
    keys_file: TextIO | None,
    default_bucketing: str,
    output: str,
    kubeconfig: str | None,
) -> None:
    """Report, for each percentage split of a FeatureFlag, the share of users that would land in
    another variant if its bucketing switched between flagd-v2 and flagd-v3 — what apps see
    when their OpenFeature flagd provider moves to the other generation."""
    if (ref is None) == (manifest is None):
        raise click.UsageError("give either NS/NAME (a live flag) or -f FILE")
    values = _read_values(keys_file) if keys_file is not None else sample_values(samples)
    if not values:
        raise click.BadParameter("no non-empty line", param_hint="--keys-file")

    bodies: Iterable[tuple[str, str, dict[str, Any]]]
    if ref is not None:
        namespace, name = _split_ref(ref)
        bodies = [(namespace, name, _read_flag(kubeconfig, namespace, name))]
    else:
        assert manifest is not None
        found = [
            (
                str((m.get("metadata") or {}).get("namespace") or "-"),
                str((m.get("metadata") or {}).get("name") or ""),
                m,
            )
            for m in _manifests(manifest)
        ]
        if not found:
            raise click.ClickException(f"{manifest.name}: no FeatureFlag in it")
        bodies = found

    reports = [_report(ns, name, body, values, default_bucketing) for ns, name, body in bodies]
    if output == "json":
        click.echo(json.dumps(reports if manifest else reports[0], ensure_ascii=False, indent=2))
        return
    for report in reports:
        _print_text(report)
