"""``ferry.client``: read Ferry's configuration and flags from ``ferry serve`` in a Python app.

    from ferry.client import FerryClient

    client = FerryClient("http://ferry-serve.ferry-system:8090", cache_dir="/var/cache/ferry")
    config = client.get("payments-api")            # Config(data=…, rendered=…, revision=…)
    answer = client.evaluate("new-checkout", {"targetingKey": "user-42"}, default=False)
    watch = client.watch(lambda name, config: reload(config), names=["payments-api"])
    ...
    watch.stop()

Standard library only (no dependency beyond Python), thread-based, safe to use from any app.

* **Credentials**: a bearer token read from ``token_file`` before every request (a projected
  service-account token rotates), by default ``$FERRY_TOKEN_FILE`` or
  ``/var/run/secrets/ferry/token``; or a fixed ``token``.
* **Namespace**: ``namespace``, else ``$FERRY_NAMESPACE``, else the pod's own namespace.
* **Last-known-good cache**: every configuration read is also written to ``cache_dir``
  (one file per entry, mode 0600). When the API cannot be reached (or answers 5xx), ``get``
  returns that copy with ``stale=True``, so an app starts and keeps running while the API is
  down. 401, 403 and 404 are never hidden behind the cache: they raise.
* **watch**: Server-Sent Events from ``/v1/watch`` in a background thread; on a change the entry
  is read again and the callback is called with it (``None`` when it was deleted). Reconnects
  with exponential backoff (0.5 s doubling to 30 s, with jitter) and ``Last-Event-ID``, so no
  change is missed; when the server says ``reset`` (the client was away too long), every
  watched entry is read again.

Like the OFREP providers of every OpenFeature SDK, ``evaluate`` never raises for an evaluation
problem: it returns the ``default`` with reason ``ERROR`` and an error code.
"""

from ferry.client.client import (
    Config,
    Evaluation,
    FerryClient,
    FerryError,
    FerryUnavailable,
    Watch,
)
from ferry.client.sse import Event, EventParser

__all__ = [
    "Config",
    "Evaluation",
    "Event",
    "EventParser",
    "FerryClient",
    "FerryError",
    "FerryUnavailable",
    "Watch",
]
