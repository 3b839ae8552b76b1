"""Ferry's API: its group, version and kinds, named once.

Everything that names a Ferry kind (watches, indexes, the Kubernetes client, webhooks, the CLI,
the work queue) imports it from here, so a new kind or a new API version is a change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "ferry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Kind:
    """One Ferry custom resource kind, with the names Kubernetes knows it by."""

    kind: str
    """CamelCase name, as in ``kind:`` of a manifest."""
    plural: str
    """Lower-case plural: the URL segment and the name RBAC rules use."""

    @property
    def resource(self) -> str:
        """``plural.group``, as in ``kubectl get`` and webhook rules."""
        return f"{self.plural}.{GROUP}"


CONFIG_ENTRY = Kind("ConfigEntry", "configentries")
CONFIG_SCHEMA = Kind("ConfigSchema", "configschemas")
FEATURE_FLAG = Kind("FeatureFlag", "featureflags")
ALL: tuple[Kind, ...] = (CONFIG_ENTRY, CONFIG_SCHEMA, FEATURE_FLAG)
BY_NAME: dict[str, Kind] = {k.kind: k for k in ALL}

#: Not a Kubernetes kind: the work-queue kind for one namespace's ``ferry-flags`` ConfigMap.
FLAG_SET = "FlagSet"
