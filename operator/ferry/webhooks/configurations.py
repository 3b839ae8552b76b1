"""Ferry's webhooks as the API server knows them: the Validating- and MutatingWebhookConfiguration.

One definition, :func:`webhook_configurations`, used twice: the operator registers it (local
stack, tests; ``clientConfig.url``), and :func:`templates` renders it into the repository's
``webhooks/`` for in-cluster installs (``clientConfig.service``, CA bundle injected by
cert-manager). A unit test keeps the files equal to what the code generates.

The code, not the YAML, is the source: the operator needs the configurations at run time, where
the repository's ``webhooks/`` is not installed with the package, and the two clientConfigs differ.
Kopf's managed configurations are not used, because Kopf hard-codes ``timeoutSeconds: 30``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ferry.domain import kinds
from ferry.domain.labels import PART_OF

#: Kubernetes allows 1-30 s (default 10). Checks take milliseconds; a webhook that has not
#: answered in 5 s is stuck, and the user should hear so quickly rather than wait half a minute.
TIMEOUT_SECONDS = 5
#: Name of both the Validating- and the MutatingWebhookConfiguration.
CONFIGURATION_NAME = "ferry"
#: The operations checked. Deleting is always allowed (see docs/decisions/0005).
OPERATIONS: tuple[Literal["CREATE", "UPDATE"], ...] = ("CREATE", "UPDATE")

# In-cluster defaults for the templates in webhooks/ (a chart overrides them).
SERVICE_NAME = "ferry-webhook"
SERVICE_NAMESPACE = "ferry-system"
#: cert-manager's CA injector fills ``caBundle`` from the Certificate this annotation names.
CERT_MANAGER_INJECT_CA = "cert-manager.io/inject-ca-from"


@dataclass(frozen=True)
class Hook:
    """One webhook: its name in the configuration, its URL path (= Kopf handler id), its kind."""

    name: str
    path: str
    kind: kinds.Kind
    mutating: bool


VALIDATE_ENTRY = Hook(
    "configentries.validate.ferry.dev", "validate-configentry", kinds.CONFIG_ENTRY, False
)
VALIDATE_SCHEMA = Hook(
    "configschemas.validate.ferry.dev", "validate-configschema", kinds.CONFIG_SCHEMA, False
)
VALIDATE_FLAG = Hook(
    "featureflags.validate.ferry.dev", "validate-featureflag", kinds.FEATURE_FLAG, False
)
STAMP_ENTRY = Hook("configentries.stamp.ferry.dev", "stamp-configentry", kinds.CONFIG_ENTRY, True)
STAMP_FLAG = Hook("featureflags.stamp.ferry.dev", "stamp-featureflag", kinds.FEATURE_FLAG, True)
HOOKS = (VALIDATE_ENTRY, VALIDATE_SCHEMA, VALIDATE_FLAG, STAMP_ENTRY, STAMP_FLAG)
BY_PATH: dict[str, Hook] = {hook.path: hook for hook in HOOKS}

_CHANGED_SPEC = "request.operation == 'CREATE' || object.spec != oldObject.spec"
# The stamp lives in annotations: a hand edit of it is put back, so those changes are sent too.
_CHANGED_STAMPED = (
    _CHANGED_SPEC
    + " || (has(object.metadata.annotations) ? object.metadata.annotations : {})"
    + " != (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {})"
)


def _webhook(hook: Hook, client_config: dict[str, Any]) -> dict[str, Any]:
    webhook: dict[str, Any] = {
        "name": hook.name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [kinds.GROUP],
                "apiVersions": [kinds.VERSION],
                "resources": [hook.kind.plural],
                "operations": list(OPERATIONS),
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
        # Let the API server skip the call when nothing we check changed: the operator's own
        # finalizer patches and users' label edits then cost no admission round trip.
        "matchConditions": [
            {"name": "spec-or-annotations-changed", "expression": _CHANGED_STAMPED}
            if hook.mutating
            else {"name": "spec-changed", "expression": _CHANGED_SPEC}
        ],
    }
    if hook.mutating:
        webhook["reinvocationPolicy"] = "Never"
    return webhook


def webhook_configurations(
    client_config: Callable[[str], dict[str, Any]],
    annotations: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The Validating- and MutatingWebhookConfiguration, given each path's ``clientConfig``.

    ``sideEffects: None`` (a call changes nothing, so ``--dry-run=server`` is checked too),
    ``failurePolicy: Fail`` (configuration that was not checked is not stored), a short timeout,
    and only CREATE and UPDATE: deleting is always allowed.
    """
    documents = []
    for kind, mutating in (
        ("ValidatingWebhookConfiguration", False),
        ("MutatingWebhookConfiguration", True),
    ):
        metadata: dict[str, Any] = {"name": CONFIGURATION_NAME, "labels": {PART_OF: "ferry"}}
        if annotations:
            metadata["annotations"] = dict(annotations)
        documents.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": metadata,
                "webhooks": [
                    _webhook(hook, client_config(hook.path))
                    for hook in HOOKS
                    if hook.mutating == mutating
                ],
            }
        )
    return documents


def url_client_config(base_url: str, ca_bundle: str | None) -> Callable[[str], dict[str, Any]]:
    """``clientConfig`` for an operator the API server reaches by URL (local stack, tests)."""
    base = base_url.rstrip("/")

    def client_config(path: str) -> dict[str, Any]:
        return {"url": f"{base}/{path}", **({"caBundle": ca_bundle} if ca_bundle else {})}

    return client_config


def templates() -> dict[str, str]:
    """The in-cluster files under ``webhooks/``: configurations reaching the operator through a
    Service, with cert-manager injecting the CA bundle from the serving certificate."""
    header = (
        "# Generated from ferry.webhooks.configurations.webhook_configurations; do not edit.\n"
        "# Regenerate (from the repository root):\n"
        "#   .venv/bin/python -c 'import ferry.webhooks.configurations as c; c.write_templates()'\n"
    )
    inject = {CERT_MANAGER_INJECT_CA: f"{SERVICE_NAMESPACE}/{SERVICE_NAME}"}

    def service(path: str) -> dict[str, Any]:
        return {
            "service": {
                "name": SERVICE_NAME,
                "namespace": SERVICE_NAMESPACE,
                "path": f"/{path}",
                "port": 443,
            }
        }

    validating, mutating = webhook_configurations(service, inject)
    return {
        "validating-webhook-configuration.yaml": header + _yaml(validating),
        "mutating-webhook-configuration.yaml": header + _yaml(mutating),
    }


def _yaml(document: dict[str, Any]) -> str:
    return str(yaml.safe_dump(document, sort_keys=False))


def write_templates(directory: Path = Path("webhooks")) -> None:
    """Write :func:`templates` into ``directory`` (the repository's ``webhooks/``)."""
    for filename, text in templates().items():
        (directory / filename).write_text(text)
