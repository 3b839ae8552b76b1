"""Thin translations of the outside world into index entries and work-queue keys.

``lifecycle`` holds Kopf's start-up and clean-up handlers (importing this package registers them
with Kopf's default registry); ``watches`` and ``followed`` are the informers' handlers.
"""

from ferry.handlers import followed, lifecycle, watches

__all__ = ["followed", "lifecycle", "watches"]
