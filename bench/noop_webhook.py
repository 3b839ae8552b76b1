"""The floor for an admission webhook: one that checks nothing, on the stack Ferry's runs on.

aiohttp over TLS (same certificate kind as Ferry's), the AdmissionReview decoded with Python's
``json`` as any webhook must, every request allowed; mutating paths (``stamp-*``) answer a
one-operation JSON patch, as Ferry's stamp does. ``bench/admission_latency.py`` registers it with
the same configurations as Ferry's webhooks, so the difference between the two is what Ferry's
checks and Kopf cost, and the difference between this and no webhook is what any out-of-process
webhook costs on the machine.

    python bench/noop_webhook.py PORT CERT KEY
"""

from __future__ import annotations

import base64
import json
import ssl
import sys

from aiohttp import web

_PATCH = base64.b64encode(
    json.dumps([{"op": "add", "path": "/metadata/labels", "value": {"bench": "noop"}}]).encode()
).decode()


async def review(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    response: dict[str, object] = {"uid": body["request"]["uid"], "allowed": True}
    if request.match_info["hook"].startswith("stamp-"):
        response |= {"patchType": "JSONPatch", "patch": _PATCH}
    return web.json_response(
        {"apiVersion": body["apiVersion"], "kind": "AdmissionReview", "response": response}
    )


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/{hook}", review)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


if __name__ == "__main__":
    main()
