"""Kopf handlers: thin translations of watch events into index entries and work-queue keys.

Importing this package registers every handler with Kopf's default registry (and applies the one
start-up fix in ``kopf_tuning``).
"""

from ferry.handlers import indexes, kopf_tuning, lifecycle, watches

kopf_tuning.apply()

__all__ = ["indexes", "lifecycle", "watches"]
