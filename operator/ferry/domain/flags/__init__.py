"""FeatureFlag: admission checks, evaluation and flagd rendering, all pure.

The operator, the webhook, the read API and the CLI use these same functions, so that a flag is
refused, answered and materialised identically everywhere, and the answer equals flagd's for the
``flags.json`` that :func:`to_flagd` renders.

    flag = parse_flag("new-checkout", spec)              # raises Invalid listing every problem
    evaluate(flag, "user-42", {"email": "a@example.com"}) # Evaluation(variant, value, reason)
    to_flagd({"new-checkout": flag})                     # the flags.json document
"""

from __future__ import annotations

from .bucketing import bucket
from .evaluate import evaluate
from .flagd import SCHEMA_URI, to_flagd
from .model import Condition, ErrorCode, Evaluation, Flag, Op, Reason, Rule, SplitEntry
from .validate import check_flag, parse_flag

__all__ = [
    "SCHEMA_URI",
    "Condition",
    "ErrorCode",
    "Evaluation",
    "Flag",
    "Op",
    "Reason",
    "Rule",
    "SplitEntry",
    "bucket",
    "check_flag",
    "evaluate",
    "parse_flag",
    "to_flagd",
]
