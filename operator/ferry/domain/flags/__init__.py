"""FeatureFlag: admission checks, evaluation and flagd rendering, all pure.

The operator, the webhook, the read API and the CLI use these same functions, so that a flag is
refused, answered and materialised identically everywhere, and the answer equals flagd's for the
``flags.json`` that :func:`to_flagd` renders.

    flag = parse_flag("new-checkout", spec)              # raises Invalid listing every problem
    evaluate(flag, "user-42", {"email": "a@example.com"}, bucketing="flagd-v3")
                                                         # Evaluation(variant, value, reason)
    to_flagd({"new-checkout": flag})                     # the flags.json document
    bucketing_for(spec, status, default)                 # the generation status.bucketing records
"""

from __future__ import annotations

from .bucketing import (
    DEFAULT_BUCKETING,
    Bucketing,
    bucket,
    bucketing_for,
    explain_bucketing,
    parse_bucketing,
)
from .compat import SplitCompat, compare_generations
from .evaluate import evaluate
from .flagd import SCHEMA_URI, to_flagd
from .model import Condition, ErrorCode, Evaluation, Flag, Op, Reason, Rule, SplitEntry
from .validate import check_flag, parse_flag

__all__ = [
    "DEFAULT_BUCKETING",
    "SCHEMA_URI",
    "Bucketing",
    "Condition",
    "ErrorCode",
    "Evaluation",
    "Flag",
    "Op",
    "Reason",
    "Rule",
    "SplitCompat",
    "SplitEntry",
    "bucket",
    "bucketing_for",
    "check_flag",
    "compare_generations",
    "evaluate",
    "explain_bucketing",
    "parse_bucketing",
    "parse_flag",
    "to_flagd",
]
