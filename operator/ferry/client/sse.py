"""Server-Sent Events, parsed as the HTML standard's event-stream interpretation says.

Only what Ferry's watch sends matters (``id``, ``event``, ``data``, ``retry`` and comments), but
the rules are the standard's: a blank line dispatches, ``data`` lines join with newlines, one
space after the colon is dropped, an ``id`` containing NUL is ignored, a line starting with a
colon is a comment, and an event with no data is not dispatched (its id still counts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None  # the last event id after this event (the standard's "last event ID")


class EventParser:
    """Feed lines (without their line ending); collect dispatched events."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self.comments = 0

    def feed(self, line: str) -> Event | None:
        """One line; the event it dispatches, if any."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return Event(event, "\n".join(data), self.last_id)
