"""`ferry run`: the operator."""

from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="Default: in-cluster.")
@click.option("--database-url", envvar="FERRY_DATABASE_URL", required=True)
@click.option("--redis-url", envvar="FERRY_REDIS_URL", required=True)
@click.option("--api-host", envvar="FERRY_API_HOST", default="127.0.0.1", show_default=True)
@click.option(
    "--api-port",
    envvar="FERRY_API_PORT",
    type=int,
    default=8080,
    show_default=True,
    help="Read API, /healthz, /readyz and /metrics.",
)
@click.option("--webhook-host", envvar="FERRY_WEBHOOK_HOST", default="127.0.0.1", show_default=True)
@click.option(
    "--webhook-port",
    envvar="FERRY_WEBHOOK_PORT",
    type=int,
    default=None,
    help="Serve the admission webhooks on this port (default: no webhooks).",
)
@click.option(
    "--webhook-dir",
    envvar="FERRY_WEBHOOK_DIR",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the webhook CA and serving certificate are written.",
)
@click.option("--workers", envvar="FERRY_WORKERS", type=int, default=8, show_default=True)
@click.option(
    "--retain-revisions",
    envvar="FERRY_RETAIN_REVISIONS",
    type=click.IntRange(min=1),
    default=None,
    help="Keep the last N revisions of each object (default: all).",
)
@click.option(
    "--retain-days",
    envvar="FERRY_RETAIN_DAYS",
    type=click.IntRange(min=1),
    default=None,
    help="Keep every revision current in the last D days (default: all).",
)
@click.option(
    "--audit-retain-days",
    envvar="FERRY_AUDIT_RETAIN_DAYS",
    type=click.IntRange(min=1),
    default=None,
    help="Keep audit rows for D days (default: forever).",
)
@click.option("--verbose", "-v", is_flag=True)
def run(
    kubeconfig: str | None,
    database_url: str,
    redis_url: str,
    api_host: str,
    api_port: int,
    webhook_host: str,
    webhook_port: int | None,
    webhook_dir: Path | None,
    workers: int,
    retain_revisions: int | None,
    retain_days: int | None,
    audit_retain_days: int | None,
    verbose: bool,
) -> None:
    """Run the Ferry operator (Kopf) against the cluster in KUBECONFIG."""
    import kopf

    import ferry.handlers  # noqa: F401 - registers the handlers
    from ferry.settings import Settings

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # one line per request or handler call drowns what matters
        for noisy in ("kopf.objects", "httpx2", "httpx", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        kubeconfig=kubeconfig,
        api_host=api_host,
        api_port=api_port,
        webhook_host=webhook_host,
        webhook_port=webhook_port,
        webhook_dir=webhook_dir,
        workers=workers,
        retain_revisions=retain_revisions,
        retain_days=retain_days,
        audit_retain_days=audit_retain_days,
    )
    kopf.run(clusterwide=True, standalone=True, memo=kopf.Memo(settings=settings))
