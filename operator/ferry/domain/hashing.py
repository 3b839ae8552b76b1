"""Content hashes: one spelling of a JSON value, so equal configuration always hashes equally.

The hash is how Ferry tells "nothing changed" (no new revision, no rewrite of ConfigMaps, no pod
rollout) from "something changed", so it must not depend on key order, whitespace or how a
client escaped non-ASCII text.
"""

from __future__ import annotations

import hashlib
import json

from ferry.domain.frozen import remembered

HASH_PREFIX = "sha256:"


def canonical_json(obj: object) -> str:
    """Serialise ``obj`` with sorted keys, no whitespace and literal unicode.

    Literal (not ``\\uXXXX``-escaped) unicode keeps the text readable where it is stored
    (PostgreSQL JSONB, Redis) and is still one fixed spelling per value.
    """
    return remembered(obj, "canonical_json", _canonical, obj)


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(obj: object) -> str:
    """Return ``"sha256:<hex>"`` of the canonical JSON of ``obj``.

    The algorithm is part of the value so a future change of algorithm can never be mistaken
    for a change of content. Lone surrogates (impossible in JSON from the API server, possible
    in hand-built test data) are hashed via ``surrogatepass`` rather than raising.
    """
    text = canonical_json(obj).encode("utf-8", "surrogatepass")
    return HASH_PREFIX + hashlib.sha256(text).hexdigest()
