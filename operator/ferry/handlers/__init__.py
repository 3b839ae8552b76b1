"""Kopf handlers: thin translations of watch events into index entries and work-queue keys.

Importing this package registers every handler with Kopf's default registry.
"""

from ferry.handlers import admission, indexes, lifecycle, watches

__all__ = ["admission", "indexes", "lifecycle", "watches"]
