"""Each FeatureFlag version parsed once, however often the flag reconciler asks.

A namespace sync asks every flag targeting it for its definition; parsing (and validating) once
per (uid, generation) keeps that independent of how many namespaces there are.
"""

from __future__ import annotations

import logging

from ferry.domain.errors import Invalid, Violation
from ferry.domain.flags import Flag, parse_flag
from ferry.reconcile.world import Snapshot

logger = logging.getLogger(__name__)


class ParsedFlags:
    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit  # bounds memory across many deleted flags
        self._parsed: dict[str, tuple[int, Flag | Invalid]] = {}

    def get(self, name: str, snapshot: Snapshot) -> Flag | Invalid:
        """The parsed flag, or why it is invalid (a malformed object never raises)."""
        cached = self._parsed.get(snapshot.uid)
        if cached is not None and cached[0] == snapshot.generation:
            return cached[1]
        result: Flag | Invalid
        try:
            result = parse_flag(name, snapshot.spec)
        except Invalid as exc:
            result = exc
        except Exception as exc:  # a malformed object must never crash the operator
            logger.exception("parsing FeatureFlag %s failed", name)
            result = Invalid("Malformed", [Violation("spec", f"malformed object: {exc}")])
        if len(self._parsed) >= self._limit:
            self._parsed.clear()
        self._parsed[snapshot.uid] = (snapshot.generation, result)
        return result

    def forget(self, uid: str) -> None:
        self._parsed.pop(uid, None)
