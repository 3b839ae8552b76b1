"""``GET /v1/flags/{namespace}/{name}/evaluate``: one flag answer over HTTP.

Answers from the operator's own index of FeatureFlags (the live spec, as ``ferry flags eval`` reads
it) through the same pure evaluator that flagd's ``flags.json`` is tested against, so an app
asking here gets the variant its flagd provider would give. Query:
``targetingKey=K`` (optional), ``attr=name=value`` (repeatable; values typed as in
:mod:`ferry.domain.flags.context`) and ``bucketing=flagd-v2|flagd-v3`` (optional: answer as a
provider of that generation would; otherwise the flag's own, :func:`bucketing_for` of its spec and
status with the operator-wide default).

Whom it trusts: the caller only chooses what to ask; every answer is computed from the flag as the
operator's index holds it, so no query can change what others are served.

Responses: 200 with ``{namespace, flag, variant, value, reason[, errorCode], revision,
bucketing}``; 400 for a malformed ``attr`` or an unknown ``bucketing``; 404 for an unknown flag;
422 with every violation for an invalid flag.
"""

from __future__ import annotations

from aiohttp import web

from ferry import metrics
from ferry.domain.errors import Invalid
from ferry.domain.flags import (
    DEFAULT_BUCKETING,
    bucketing_for,
    evaluate,
    parse_bucketing,
)
from ferry.domain.flags.context import BadAttribute, answer_json, parse_attributes
from ferry.reconcile.parsed import ParsedFlags
from ferry.reconcile.world import World


def add_routes(
    app: web.Application, world: World, default_bucketing: str = DEFAULT_BUCKETING
) -> None:
    """Register the flag routes on ``app`` (before it starts).

    ``default_bucketing`` is the operator-wide default generation, used for a flag whose spec and
    status name none (one not reconciled yet).
    """
    default_bucketing = parse_bucketing(default_bucketing, "default bucketing")
    parsed = ParsedFlags()

    async def evaluate_flag(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        try:
            attributes = parse_attributes(request.query.getall("attr", []))
        except BadAttribute as exc:
            return web.json_response({"error": str(exc)}, status=400)
        asked = request.query.get("bucketing")
        try:
            forced = None if asked is None else parse_bucketing(asked, "query parameter bucketing")
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        snapshot = world.flag(namespace, name)
        if snapshot is None or snapshot.deleting:
            return web.json_response(
                {"error": f"FeatureFlag {namespace}/{name} not found"}, status=404
            )
        flag = parsed.get(name, snapshot)
        if isinstance(flag, Invalid):
            return web.json_response(
                {
                    "error": f"FeatureFlag {namespace}/{name} is invalid",
                    "reason": flag.reason,
                    "violations": [{"path": v.path, "message": v.message} for v in flag.violations],
                },
                status=422,
            )
        status = snapshot.status
        bucketing = forced or bucketing_for(snapshot.spec, status, default_bucketing)
        evaluation = evaluate(flag, request.query.get("targetingKey"), attributes, bucketing)
        metrics.FLAG_EVALUATIONS.labels(str(evaluation.reason)).inc()
        revision = status.get("revision")
        return web.json_response(
            answer_json(
                namespace,
                name,
                evaluation,
                revision if isinstance(revision, int) else None,
                bucketing,
            )
        )

    app.router.add_get("/v1/flags/{namespace}/{name}/evaluate", evaluate_flag)
