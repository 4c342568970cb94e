"""Events as read back from a stream: the typed record and its decoding from entry fields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamstore.errors import CorruptEventError
from streamstore.keys import EVENT_FIELDS
from streamstore.operations import OPERATIONS, FieldPath, parse_event_path

__all__ = ["Event", "decode_entry", "text"]


def text(value: str | bytes) -> str:
    """Return ``value`` as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Event:
    """One event of an instance's history (an entry of its stream)."""

    #: Stream entry id, e.g. ``"1732262400000-0"``.
    id: str
    #: Position in the instance's history: 1, 2, 3, ... without gaps.
    seq: int
    #: Event type, a key of the operations table (``saved``, ``list.append``, ...).
    type: str
    #: JSONPath of the field the event touched (``$`` for whole-document events).
    path: str
    #: The event's arguments, decoded from JSON.
    data: Any
    #: Server time of the write, epoch milliseconds.
    ts: int
    #: Metadata of the write (actor, correlation id, ...); empty when none was set.
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: Schema version of the entry layout.
    v: str = "1"

    @property
    def at(self) -> datetime:
        """Return the write time as a timezone-aware UTC datetime."""
        return datetime.fromtimestamp(self.ts / 1000, tz=UTC)

    @property
    def field_path(self) -> FieldPath:
        """Return the touched field as a tuple of field names (empty for the whole document)."""
        return parse_event_path(self.path)


def decode_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> Event:
    """Decode one stream entry (as returned by XRANGE) into an `Event`.

    Raises `CorruptEventError` when a field is missing or does not parse.
    """
    values = {text(k): text(v) for k, v in fields.items()}
    missing = [name for name in EVENT_FIELDS if name not in values]
    eid = text(entry_id)
    if missing:
        raise CorruptEventError(f"stream entry {eid} lacks fields {missing}")
    if values["type"] not in OPERATIONS:
        raise CorruptEventError(f"stream entry {eid} has unknown event type {values['type']!r}")
    try:
        return Event(
            id=eid,
            seq=int(values["seq"]),
            type=values["type"],
            path=values["path"],
            data=json.loads(values["data"]),
            ts=int(values["ts"]),
            meta=json.loads(values["meta"]),
            v=values["v"],
        )
    except ValueError as exc:
        raise CorruptEventError(f"stream entry {eid} does not parse: {exc}") from exc
