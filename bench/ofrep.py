"""`ferry serve`: OFREP single-flag evaluation, next to its floor.

Starts the local stack (kube-apiserver + etcd, PostgreSQL, Redis) with the operator, applies one
FeatureFlag (a rule on an attribute, then a 30/70 split: the evaluation hashes the targeting key)
and waits until ``ferry serve`` answers for it: the operator has recorded its revision in
PostgreSQL and its served-flags document in Redis, as in a cluster. ``ferry serve`` runs as its
own service account, with one worker and with ``--serve-workers``; the caller's token (audience
``ferry``, RBAC ``get`` on ``featureflags``) is in every request, the auth caches warm.

Each request: ``POST /ofrep/v1/evaluate/flags/new-checkout`` with
``{"context": {"targetingKey": "user-42", "region": "eu-west-1", "plan": "pro"}}``. Floor, in the
same run: ``noop_read_server.py``, a minimal aiohttp handler answering the same bytes to the same
POST (one process, and as many as Ferry's workers). Load: the same generator for all
(read_stack.py: wrk by default) in a second process, ``--connections`` keep-alive connections;
targets take turns, ``--rounds`` times.

Run: .venv/bin/python bench/ofrep.py [--seconds 10] [--rounds 3] [--connections 64] [--workers 2]
(issue 12's goal: >= 5,000 evaluations/s)
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error

from read_stack import (
    NAMESPACE,
    Target,
    apply,
    arguments,
    call,
    compare,
    identities,
    on_stack,
    start_serve,
    warm,
)

from ferry.devenv.stack import Stack
from ferry.domain import kinds

FLAG = {
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": [
        {
            "when": [{"attribute": "email", "op": "endsWith", "value": "@example.com"}],
            "variant": "on",
        },
        {
            "when": [{"attribute": "region", "op": "equals", "value": "eu-west-1"}],
            "split": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}],
        },
    ],
}
CONTEXT = {"targetingKey": "user-42", "region": "eu-west-1", "plan": "pro"}


def main() -> None:
    args = arguments(__doc__ or "")
    on_stack(lambda stack: measure(stack, args), with_operator=True)


def measure(stack: Stack, args: argparse.Namespace) -> None:
    server_token, app_token = identities(stack)
    apply(
        stack,
        {
            "apiVersion": f"{kinds.GROUP}/{kinds.VERSION}",
            "kind": kinds.FEATURE_FLAG.kind,
            "metadata": {"name": "new-checkout", "namespace": NAMESPACE},
            "spec": FLAG,
        },
    )
    body = json.dumps({"context": CONTEXT}).encode()
    request = Target(
        "",
        0,
        "/ofrep/v1/evaluate/flags/new-checkout",
        {"Authorization": f"Bearer {app_token}"},
        body,
    )
    serving = {workers: start_serve(stack, server_token, workers) for workers in (1, args.workers)}
    deadline = time.monotonic() + 120
    while True:  # the operator reconciles the flag: recorded, then served through Redis
        try:
            call(serving[1], request.path, request.headers, request.body)
            break
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    answer = warm(serving, request)[1]
    print(f"{body.decode()} -> {answer.decode()}")
    compare(stack, args, serving, request, answer)


if __name__ == "__main__":
    main()
