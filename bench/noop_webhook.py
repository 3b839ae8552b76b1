"""The floor for an admission webhook: one that checks nothing, on the stack Ferry's runs on.

aiohttp over TLS (same certificate kind as Ferry's), the AdmissionReview decoded with Python's
``json`` as any webhook must, every request allowed; mutating paths (``stamp-*``) answer a
one-operation JSON patch, as Ferry's stamp does. ``bench/admission_latency.py`` registers it with
the same configurations as Ferry's webhooks, so the difference between the two is what Ferry's
checks and Kopf cost, and the difference between this and no webhook is what any out-of-process
webhook costs on the machine.

``GET /metrics`` gives ``noop_admission_duration_seconds`` per webhook: handler entered → answer
built, as the operator's ``ferry_admission_duration_seconds`` (same buckets), so that the time a
process spends waiting for a CPU inside a call can be compared between the two.

    python bench/noop_webhook.py PORT CERT KEY
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest

from ferry.webhooks.server import ADMISSION_BUCKETS

SECONDS = Histogram(
    "noop_admission_duration_seconds",
    "Time the no-op webhook spends answering one admission request",
    ["webhook"],
    buckets=ADMISSION_BUCKETS,
)

_PATCH = base64.b64encode(
    json.dumps([{"op": "add", "path": "/metadata/labels", "value": {"bench": "noop"}}]).encode()
).decode()


async def review(request: web.Request) -> web.Response:
    started = time.perf_counter()
    body = json.loads(await request.read())
    response: dict[str, object] = {"uid": body["request"]["uid"], "allowed": True}
    hook = request.match_info["hook"]
    if hook.startswith("stamp-"):
        response |= {"patchType": "JSONPatch", "patch": _PATCH}
    answer = web.json_response(
        {"apiVersion": body["apiVersion"], "kind": "AdmissionReview", "response": response}
    )
    SECONDS.labels(hook).observe(time.perf_counter() - started)
    return answer


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/{hook}", review)
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


if __name__ == "__main__":
    main()
