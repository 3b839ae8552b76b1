"""A workload that reads its configuration from `ferry serve` and reloads it on change.

    FERRY_URL=http://ferry-serve.ferry-system:8090 python examples/client/app.py --entry NAME

In a pod (see deployment.yaml beside this file): the projected token at
/var/run/secrets/ferry/token (audience ``ferry``), the namespace from the service account,
RBAC ``get`` on ``configentries`` (and ``featureflags`` for flags) in it. The last-known-good
copy in FERRY_CACHE_DIR lets it start while the API is down.

``--once`` prints the configuration and the flag answer and exits (what the tests run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading

from ferry.client import Config, FerryClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="payments-api", help="ConfigEntry to read")
    parser.add_argument("--flag", default="new-checkout", help="FeatureFlag to evaluate")
    parser.add_argument("--user", default="alice", help="targeting key for the flag")
    parser.add_argument("--once", action="store_true", help="print once and exit")
    args = parser.parse_args()

    client = FerryClient(
        os.environ.get("FERRY_URL", "http://127.0.0.1:8090"),
        cache_dir=os.environ.get("FERRY_CACHE_DIR", "/tmp/ferry-cache"),
    )
    config = client.get(args.entry)
    stale = " (last-known-good copy: the API is unavailable)" if config.stale else ""
    print(f"{config.namespace}/{config.name} revision {config.revision}{stale}")
    print(json.dumps(config.data, indent=2, sort_keys=True))
    answer = client.evaluate(args.flag, {"targetingKey": args.user}, default=False)
    print(f"flag {args.flag} for {args.user}: {answer.value} ({answer.reason})")
    if args.once:
        return 0

    def reload(name: str, new: Config | None) -> None:
        if new is None:
            print(f"{name} was deleted; keeping what we have")
        else:
            print(
                f"{name} changed: revision {new.revision}: {json.dumps(new.data, sort_keys=True)}"
            )

    watch = client.watch(reload, names=[args.entry])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    watch.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
