"""Regular expressions on Google's RE2, which matches in linear time.

Python's ``re`` backtracks: ``^(a+)+$`` against 40 characters never finishes. Every pattern a user
writes into a schema is compiled and matched with RE2; a pattern RE2 cannot express
(backreferences, lookaround) is refused with a reason, never handed to ``re``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import re2

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a user's bad pattern is a violation, not a line on stderr


@functools.lru_cache(maxsize=4096)
def compile_re2(pattern: str) -> Any:
    """Compile with RE2. Raises ``re2.error`` for syntax RE2 does not support."""
    return re2.compile(pattern, _RE2_OPTIONS)


def search(regex: Any, text: str) -> bool:
    """``regex`` found anywhere in ``text`` (JSON Schema's ``pattern`` semantics)."""
    try:
        return regex.search(text) is not None
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8: match on their raw bytes
        return regex.search(text.encode("utf-8", "surrogatepass")) is not None


def _re2_error_text(error: Exception) -> str:
    detail = error.args[0] if error.args else error
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


@functools.lru_cache(maxsize=4096)
def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used, or ``None`` if RE2 accepts it.

    Python's ``re`` is consulted only to *classify* the failure (compiling is cheap and safe;
    matching is what backtracks), so the user learns whether the pattern is wrong or merely uses
    a feature that would need a backtracking engine.
    """
    try:
        compile_re2(pattern)
    except re2.error as error:
        reason = _re2_error_text(error)
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError, ValueError):
            return f"invalid regular expression {pattern!r}: {reason}"
        return f"pattern uses a feature Ferry's linear-time regex engine does not support: {reason}"
    except (TypeError, ValueError) as error:  # e.g. NUL handling, odd types
        return f"invalid regular expression {pattern!r}: {error}"
    return None
