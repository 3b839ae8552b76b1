"""Operator settings: a plain dataclass filled from flags or the environment by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    kubeconfig: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    webhook_host: str = "127.0.0.1"
    webhook_port: int | None = None  # None: no admission webhooks served
    webhook_dir: Path | None = None  # where generated webhook TLS files go
    workers: int = 8
    requeue_max_seconds: float = 30.0
    # History retention (None: keep everything); see ferry.adapters.store.Retention.
    retain_revisions: int | None = None
    retain_days: int | None = None
    audit_retain_days: int | None = None
