"""The Kubernetes ``Status`` object: how Ferry's HTTP servers (``ferry serve``, ``ferry
history-api``) say why a request failed, as any API server does, so kubectl and client
libraries print the message."""

from __future__ import annotations

from typing import Any

#: The ``reason`` of each HTTP status code Ferry answers with (metav1.StatusReason).
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    408: "Timeout",
    413: "RequestEntityTooLarge",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
    504: "Timeout",  # kubectl prints "(Timeout)"
}


def status_body(code: int, message: str, **details: Any) -> dict[str, Any]:
    """A failed request's ``Status``; ``details`` go in its ``details`` object."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "InternalError"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body
