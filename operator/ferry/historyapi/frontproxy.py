"""Whom the history API trusts: the aggregation layer's front proxy, and nobody else's headers.

The Kubernetes API server authenticates the caller (any method kubectl supports), then proxies
the request here presenting its front-proxy client certificate, with the caller's identity in
headers (``X-Remote-User``, ``X-Remote-Group``, ``X-Remote-Extra-*``: the names are the
cluster's, published with the CA in ``kube-system/extension-apiserver-authentication``). Those
headers are believed only on a connection whose client certificate chains to the
``requestheader-client-ca-file`` of that ConfigMap (checked by the TLS handshake) and whose
common name is one of ``requestheader-allowed-names`` (checked here; empty: any name that CA
signed, as Kubernetes does). Anything else is 401: a forged ``X-Remote-User`` over a plain
connection, or over one with another certificate, is refused.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.adapters.kube_auth import Unauthenticated, User

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"


def _list(data: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = data.get(key)
    if not raw:
        return ()
    value = json.loads(raw)
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


@dataclass(frozen=True)
class FrontProxy:
    """The ``requestheader-*`` settings of the cluster's API server."""

    ca_pem: str
    allowed_names: tuple[str, ...]
    username_headers: tuple[str, ...]
    group_headers: tuple[str, ...]
    extra_prefixes: tuple[str, ...]

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> FrontProxy:
        """From the ConfigMap's ``data``; raises ValueError when it has no front-proxy CA (the
        API server was started without ``--requestheader-client-ca-file``)."""
        ca = data.get("requestheader-client-ca-file")
        if not ca:
            raise ValueError(
                f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} has no requestheader-client-ca-file: "
                "start kube-apiserver with --requestheader-client-ca-file (the aggregation layer)"
            )
        return cls(
            ca_pem=ca,
            allowed_names=_list(data, "requestheader-allowed-names"),
            username_headers=_list(data, "requestheader-username-headers") or ("X-Remote-User",),
            group_headers=_list(data, "requestheader-group-headers"),
            extra_prefixes=_list(data, "requestheader-extra-headers-prefix"),
        )

    def require_client_certificate(self, context: ssl.SSLContext) -> None:
        """Ask every client for a certificate and accept only those this CA signed. Optional
        at the handshake so that probes (``/healthz``) need none; every API path refuses a
        connection without one."""
        context.load_verify_locations(cadata=self.ca_pem)
        context.verify_mode = ssl.CERT_OPTIONAL

    def trusted(self, peercert: Mapping[str, Any] | None) -> str | None:
        """Why the connection's (already verified) certificate is not the front proxy's; None
        when it is."""
        if not peercert:
            return "no client certificate of the API server's front proxy was presented"
        names = [
            value
            for rdn in peercert.get("subject", ())
            for key, value in rdn
            if key == "commonName"
        ]
        if self.allowed_names and not set(names) & set(self.allowed_names):
            return f"client certificate {names} is not one of the allowed front-proxy names"
        return None

    def user(self, peercert: Mapping[str, Any] | None, headers: Mapping[str, str]) -> User:
        """The caller the front proxy vouches for; raises :class:`Unauthenticated`."""
        problem = self.trusted(peercert)
        if problem is not None:
            raise Unauthenticated(problem)
        username = next((headers[h] for h in self.username_headers if headers.get(h)), None)
        if not username:
            raise Unauthenticated("the front proxy sent no user name")
        groups: list[str] = []
        extra: dict[str, list[str]] = {}
        for key, value in headers.items():  # every value of a repeated header
            lowered = key.lower()
            if any(lowered == g.lower() for g in self.group_headers):
                groups.append(value)
                continue
            for prefix in self.extra_prefixes:
                if lowered.startswith(prefix.lower()):
                    name = urllib.parse.unquote(lowered[len(prefix) :])
                    extra.setdefault(name, []).append(value)
        return User(
            username=username,
            groups=tuple(groups),
            extra=tuple(sorted((k, tuple(v)) for k, v in extra.items())),
        )
