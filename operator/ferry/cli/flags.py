"""`ferry flags eval NS/NAME`: what a live FeatureFlag answers for one caller.

It reads the flag from the API server (KUBECONFIG) and evaluates it with the same pure evaluator
the operator, the read API and (through the rendered flags.json) flagd use, so "why does this
user get that variant" is answered here exactly as in production.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ferry.domain.errors import Invalid
from ferry.domain.flags import evaluate, parse_flag
from ferry.domain.flags.context import BadAttribute, answer_json, parse_attributes


@click.group()
def flags() -> None:
    """Work with FeatureFlags."""


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
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Default: in-cluster.")
def eval_flag(
    ref: str,
    targeting_key: str | None,
    attrs: tuple[str, ...],
    output: str,
    kubeconfig: str | None,
) -> None:
    """Print the variant, value and reason the live flag NS/NAME gives this caller."""
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise click.BadParameter("expected NAMESPACE/NAME", param_hint="NS/NAME")
    try:
        attributes = parse_attributes(attrs)
    except BadAttribute as exc:
        raise click.BadParameter(str(exc), param_hint="--attr") from exc

    body = _read_flag(kubeconfig, namespace, name)
    try:
        flag = parse_flag(name, body.get("spec") or {})
    except Invalid as exc:
        lines = "\n".join(f"  {v}" for v in exc.violations)
        raise click.ClickException(f"FeatureFlag {namespace}/{name} is invalid:\n{lines}") from exc

    revision = (body.get("status") or {}).get("revision")
    answer = answer_json(
        namespace,
        name,
        evaluate(flag, targeting_key, attributes),
        revision if isinstance(revision, int) else None,
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
