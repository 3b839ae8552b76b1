"""Rendering resolved configuration into the ``data`` of a ConfigMap, one format at a time.

Rendering is deterministic (sorted keys, fixed spelling of values) because its output is hashed
and compared: the same configuration must render byte-for-byte the same every time, or every
reconcile would rewrite ConfigMaps and roll pods for nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import yaml

from ferry.domain.errors import Invalid, Violation, field_path

FORMATS = ("json", "yaml", "env", "properties", "files")

#: Kubernetes refuses a ConfigMap whose ``data`` (keys plus values, in bytes) exceeds 1 MiB.
MAX_CONFIGMAP_BYTES = 1024 * 1024

MAX_KEY_LENGTH = 253
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_NOT_ENV_CHAR = re.compile(r"[^A-Z0-9]")
_SPRING_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")

Parts = tuple[str | int, ...]


def _leaves(data: Mapping[str, Any]) -> Iterator[tuple[Parts, Any]]:
    """Yield (path, value) for every leaf in key order, without recursion.

    An empty object or list is a leaf: it has no children to carry it, and dropping it would make
    ``{"a": {}}`` render like ``{}``.
    """
    stack: list[tuple[Parts, Any]] = [((), data)]
    while stack:
        parts, value = stack.pop()
        if isinstance(value, Mapping) and (value or not parts):
            children: list[tuple[Parts, Any]] = [
                ((*parts, key), value[key]) for key in sorted(value, key=str)
            ]
        elif isinstance(value, list) and value:
            children = [((*parts, i), item) for i, item in enumerate(value)]
        else:
            yield parts, value
            continue
        stack.extend(reversed(children))


def _scalar(value: Any) -> str:
    """Text of a leaf: strings verbatim, ``true``/``false``, null as empty, the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _key_problem(key: str) -> str | None:
    if len(key) > MAX_KEY_LENGTH:
        return f"key {key[:40]!r}… is {len(key)} characters; a ConfigMap key may have at most 253"
    if not _CONFIGMAP_KEY.fullmatch(key):
        return f"{key!r} is not a valid ConfigMap key (allowed: letters, digits, '-', '_', '.')"
    return None


def _flat(
    data: Mapping[str, Any],
    kind: str,
    key_of: Callable[[Parts], str],
    value_of: Callable[[Any], str],
    check_key: bool,
) -> dict[str, str]:
    """Flatten leaves to ``key_of(path) -> value_of(leaf)``, refusing two leaves on one key."""
    out: dict[str, str] = {}
    origin: dict[str, str] = {}
    violations: list[Violation] = []
    for parts, value in _leaves(data):
        if not parts:
            continue  # empty data renders as no keys at all
        key = key_of(parts)
        shown = field_path("", parts)
        if key in origin:
            message = f"{kind} key {key} produced by both {origin[key]} and {shown}"
            violations.append(Violation("spec.data", message))
            continue
        if check_key and (problem := _key_problem(key)):
            violations.append(Violation(field_path("spec.data", parts), problem))
            continue
        origin[key] = shown
        out[key] = value_of(value)
    if violations:
        raise Invalid("RenderError", violations)
    return out


def env_key(parts: Parts) -> str:
    """``db.poolSize`` → ``DB_POOLSIZE``; ``hosts[0]`` → ``HOSTS_0``."""
    return _NOT_ENV_CHAR.sub("_", "_".join(str(p) for p in parts).upper())


def _render_env(data: Mapping[str, Any]) -> dict[str, str]:
    # Empty containers render as "{}"/"[]": "" would be indistinguishable from null.
    return _flat(data, "env", env_key, _scalar, check_key=True)


def properties_key(parts: Parts) -> str:
    """Spring Boot path ``a.b[0].c``; keys relaxed binding would mangle are ``[bracketed]``.

    Spring drops characters other than letters, digits and ``-`` from unbracketed map keys and
    treats dots as nesting, so ``{"a.b": 1}`` must be written ``[a.b]`` to survive binding.
    """
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SPRING_PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part}]"
    return out


def _escape_properties(text: str, is_key: bool) -> str:
    """Escape as ``java.util.Properties.store`` does, so ``Properties.load`` reads ``text`` back.

    Non-ASCII is written as ``\\uXXXX`` (UTF-16 units): that reads back correctly whether the
    reader assumes ISO-8859-1 (``Properties.load(InputStream)``) or UTF-8 (Spring Boot).
    """
    out: list[str] = []
    for i, char in enumerate(text):
        if char == " ":
            out.append("\\ " if is_key or i == 0 else " ")
        elif char in "\\=:#!":
            out.append("\\" + char)
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif " " < char < "\x7f":
            out.append(char)
        else:
            encoded = char.encode("utf-16-be", "surrogatepass")
            for j in range(0, len(encoded), 2):
                out.append(f"\\u{encoded[j] << 8 | encoded[j + 1]:04X}")
    return "".join(out)


def _properties_value(value: Any) -> str:
    # Empty containers render as "": Spring binds `list=` to an empty collection.
    if isinstance(value, Mapping | list):
        return ""
    return _scalar(value)


def _render_properties(data: Mapping[str, Any]) -> dict[str, str]:
    flat = _flat(data, "properties", properties_key, _properties_value, check_key=False)
    lines = sorted(
        f"{_escape_properties(key, True)}={_escape_properties(value, False)}"
        for key, value in flat.items()
    )
    return {"application.properties": "".join(line + "\n" for line in lines)}


def _render_files(data: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    violations: list[Violation] = []
    for key in sorted(data, key=str):
        value = data[key]
        if problem := _key_problem(str(key)):
            violations.append(Violation(field_path("spec.data", [str(key)]), problem))
            continue
        out[key] = value if isinstance(value, str) else _json(value)
    if violations:
        raise Invalid("RenderError", violations)
    return out


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def render(data: Mapping[str, Any], fmt: str) -> dict[str, str]:
    """The ConfigMap ``data`` for ``data`` in format ``fmt``.

    Raises :class:`Invalid` (reason ``RenderError``) for an unknown format, two leaves that
    would share one key, or a key Kubernetes would refuse; the whole list at once.
    """
    if fmt == "json":
        return {"config.json": _json(data)}
    if fmt == "yaml":
        text = yaml.safe_dump(
            _plain(data), sort_keys=True, allow_unicode=True, default_flow_style=False
        )
        return {"config.yaml": text}
    if fmt == "env":
        return _render_env(data)
    if fmt == "properties":
        return _render_properties(data)
    if fmt == "files":
        return _render_files(data)
    expected = ", ".join(FORMATS)
    message = f"unknown format {fmt!r} (expected one of: {expected})"
    raise Invalid("RenderError", [Violation("spec.target.format", message)])


def _plain(value: Any) -> Any:
    """Plain dicts and lists: ``yaml.safe_dump`` refuses other Mapping types."""
    return json.loads(json.dumps(value))


def check_size(rendered: Mapping[str, str], path: str = "spec.data") -> None:
    """Refuse rendered data the API server would refuse, with a message saying by how much.

    Counts exactly what Kubernetes counts for a ConfigMap: the UTF-8 bytes of every key plus every
    value, against 1 MiB (:data:`MAX_CONFIGMAP_BYTES`). Metadata (labels, annotations) is not
    counted there and is not counted here; there is no extra headroom.
    """
    size = sum(
        len(key.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))
        for key, value in rendered.items()
    )
    if size > MAX_CONFIGMAP_BYTES:
        message = (
            f"rendered configuration is {size} bytes; "
            f"a ConfigMap holds at most {MAX_CONFIGMAP_BYTES} bytes (1 MiB)"
        )
        raise Invalid("TooLarge", [Violation(path, message)])
