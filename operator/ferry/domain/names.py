"""Kubernetes' own name rules, checked where Ferry accepts a name before any API server has: a
target in an entry (admission), a name in a history request (never sent to PostgreSQL unless it
could name an object)."""

from __future__ import annotations

import re

#: RFC 1123 label: lower-case alphanumerics and '-', starting and ending with an alphanumeric.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
#: RFC 1123 subdomain: labels joined by '.'.
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_namespace_name(text: str) -> bool:
    """A namespace's name: an RFC 1123 label of at most 63 characters."""
    return len(text) <= 63 and _DNS1123_LABEL.fullmatch(text) is not None


def is_object_name(text: str) -> bool:
    """A ConfigMap's, a Secret's or one of Ferry's objects' name: an RFC 1123 subdomain of at
    most 253 characters."""
    return len(text) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(text) is not None
