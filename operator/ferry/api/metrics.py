"""Prometheus metrics of ``ferry serve``. Labels are route templates, sources and outcomes only:
never a namespace, a name, a user or a token (no tenant can be read off ``/metrics``, and the
series stay few)."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "ferry_serve_requests_total",
    "Requests answered, by route template and status",
    ["route", "code"],
)
REQUEST_SECONDS = Histogram(
    "ferry_serve_request_duration_seconds",
    "Time to answer a request (a watch: until its headers are sent)",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SOURCE = Counter(
    "ferry_serve_reads_total",
    "Reads of configuration or flags, by where they were answered from",
    ["what", "source"],
)
AUTH = Counter(
    "ferry_serve_auth_total",
    "Authentication (token) and authorisation (access) checks, by outcome",
    ["check", "outcome"],
)
WATCHERS = Gauge("ferry_serve_watchers", "Server-Sent Event streams open now")
STREAM_UP = Gauge("ferry_serve_stream_up", "1 while the Redis change stream is being tailed")
WATCHES_REFUSED = Counter(
    "ferry_serve_watches_refused_total",
    "Watches refused with 429 because a limit was reached (limit: user or process)",
    ["limit"],
)
WATCHES_DROPPED = Counter(
    "ferry_serve_watches_dropped_total",
    "Watches ended because the client stopped taking what was sent",
)
CONNECTIONS = Gauge("ferry_serve_connections", "Connections open now (this process)")
CONNECTIONS_REFUSED = Counter(
    "ferry_serve_connections_refused_total",
    "Connections answered 503 and closed because the process held its maximum already",
)
ANSWERS_DROPPED = Counter(
    "ferry_serve_answers_dropped_total",
    "Connections dropped because the client took none of an answer in time",
)


OTHER = "other"


class FlagSeries:
    """Bounded label values for ``ferry_flag_evaluations_total``.

    A flag's name is a tenant's data and tenants can make flags without end, while ``/metrics``
    answers anyone who reaches the port and every series costs the scraper memory. So only the
    first ``limit`` flags (``namespace/key``) seen get series of their own, each with at most
    ``variants`` distinct variants; everything past that counts under ``"other"``. The default
    limit is 0: flag names stay off ``/metrics`` unless the platform team opts in.
    """

    def __init__(self, limit: int, variants: int = 16) -> None:
        self._limit = limit
        self._variants = variants
        self._seen: dict[str, set[str]] = {}

    def labels(self, namespace: str, key: str, variant: str | None) -> tuple[str, str]:
        flag = f"{namespace}/{key}"
        variants = self._seen.get(flag)
        if variants is None:
            if len(self._seen) >= self._limit:
                return OTHER, OTHER
            variants = self._seen[flag] = set()
        value = variant or ""  # no variant: an error, or a disabled flag's default
        if value not in variants:
            if len(variants) >= self._variants:
                return flag, OTHER
            variants.add(value)
        return flag, value


@functools.cache
def child(metric: Counter | Histogram, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: ``labels()`` costs several times the increment
    (a lock and a tuple per call), and it is on every request's path. The label values are
    route templates, codes and outcomes: few, so the cache stays small."""
    return metric.labels(*labels)
