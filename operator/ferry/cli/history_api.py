"""`ferry history-api`: serve revisions and the audit trail behind the Kubernetes API server's
aggregation layer (``history.ferry.dev/v1alpha1``; docs/history-api.md)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click

from ferry.cli.run import configure_logging
from ferry.historyapi.server import Options, run
from ferry.tls import serving_certificate


@click.command("history-api")
@click.option("--database-url", envvar="FERRY_DATABASE_URL", required=True)
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Default: in-cluster.")
@click.option("--host", envvar="FERRY_HISTORY_API_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="FERRY_HISTORY_API_PORT", type=int, default=8443, show_default=True)
@click.option(
    "--cert-dir",
    envvar="FERRY_HISTORY_API_CERT_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="tls.crt/tls.key (a mounted Secret) or, when absent, a certificate generated there "
    "for --cert-host.",
)
@click.option(
    "--cert-host",
    envvar="FERRY_HISTORY_API_CERT_HOST",
    default="ferry-history.ferry-system.svc",
    show_default=True,
    help="<service>.<namespace>.svc of the APIService's Service.",
)
@click.option(
    "--auth-cache-ttl-seconds",
    envvar="FERRY_HISTORY_API_AUTH_CACHE_TTL_SECONDS",
    type=float,
    default=10.0,
    show_default=True,
    help="How long a SubjectAccessReview answer is reused.",
)
@click.option("--verbose", "-v", is_flag=True)
def history_api(
    database_url: str,
    kubeconfig: str | None,
    host: str,
    port: int,
    cert_dir: Path | None,
    cert_host: str,
    auth_cache_ttl_seconds: float,
    verbose: bool,
) -> None:
    """Serve configrevisions and auditevents (history.ferry.dev) to the Kubernetes API server.

    Trusts only the API server's front proxy (its client certificate, checked against
    kube-system/extension-apiserver-authentication) and authorises every request with a
    SubjectAccessReview.
    """
    configure_logging(verbose)
    certificate = serving_certificate(cert_dir, cert_host)
    options = Options(
        database_url=database_url,
        kubeconfig=kubeconfig,
        host=host,
        port=port,
        cert=certificate.cert,
        key=certificate.key,
        auth_cache_ttl_seconds=auth_cache_ttl_seconds,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run(options, stop)

    asyncio.run(main())
