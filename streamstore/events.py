"""Events as read back from a stream: the typed record and its decoding from entry fields."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import orjson

from streamstore.errors import CorruptEventError
from streamstore.keys import REQUIRED_EVENT_FIELDS
from streamstore.operations import OPERATIONS, FieldPath, parse_event_path

__all__ = [
    "Entry",
    "Event",
    "decode_bytes_entry",
    "decode_entry",
    "decode_feed_entry",
    "flat_entry",
    "loads",
    "read_entry",
    "text",
]


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
    #: The model's ``Meta.schema_version`` when the event was written (upcasters read it).
    model_version: int = 1

    @property
    def at(self) -> datetime:
        """Return the write time as a timezone-aware UTC datetime."""
        return datetime.fromtimestamp(self.ts / 1000, tz=UTC)

    @property
    def field_path(self) -> FieldPath:
        """Return the touched field as a tuple of field names (empty for the whole document)."""
        return parse_event_path(self.path)

    def touches(self, path: FieldPath) -> bool:
        """Tell whether the event changed (or may have changed) the field at ``path``.

        True when one path contains the other: ``set $.profile`` touches ``profile.skills``,
        ``list.append $.profile.skills`` touches ``profile``, and whole-document events
        (``saved``, ``deleted``, ...) touch every field.
        """
        mine = self.field_path
        shorter = min(len(mine), len(path))
        return mine[:shorter] == path[:shorter]

    def to_dict(self) -> dict[str, Any]:
        """Return the event as plain JSON types (``at`` as ISO 8601), e.g. for a JSON line."""
        return {
            "id": self.id,
            "seq": self.seq,
            "type": self.type,
            "path": self.path,
            "data": self.data,
            "ts": self.ts,
            "at": self.at.isoformat(timespec="milliseconds"),
            "meta": dict(self.meta),
            "v": self.v,
            "mv": self.model_version,
        }


def loads(raw: str | bytes) -> Any:
    """Parse JSON text from Redis: orjson (several times faster), json for what it refuses.

    orjson refuses integers beyond 64 bits, which JSON allows; json still raises on bad text.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def decode_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> Event:
    """Decode one stream entry (as returned by XRANGE) into an `Event`.

    Raises `CorruptEventError` when a field is missing or does not parse.
    """
    return _decode(text(entry_id), {text(k): text(v) for k, v in fields.items()})


def decode_feed_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> tuple[str, Event]:
    """Decode a change feed entry: the instance's pk, and its event (with the stream's id).

    Raises `CorruptEventError` when a field is missing or does not parse.
    """
    values = {text(k): text(v) for k, v in fields.items()}
    if "pk" not in values or "id" not in values:
        raise CorruptEventError(f"feed entry {text(entry_id)} lacks pk or id")
    return values["pk"], _decode(values["id"], values)


def flat_entry(entry: Sequence[Any]) -> tuple[Any, dict[Any, Any]]:
    """Return an entry of a script reply, ``[id, [name, value, ...]]``, as XRANGE gives it."""
    entry_id, flat = entry
    return entry_id, dict(zip(flat[0::2], flat[1::2], strict=True))


def _decode(eid: str, values: dict[str, str]) -> Event:
    missing = [name for name in REQUIRED_EVENT_FIELDS if name not in values]
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
            data=loads(values["data"]),
            ts=int(values["ts"]),
            meta=_EMPTY_META if values["meta"] == "{}" else loads(values["meta"]),
            v=values["v"],
            model_version=int(values.get("mv", "1")),
        )
    except ValueError as exc:
        raise CorruptEventError(f"stream entry {eid} does not parse: {exc}") from exc


#: Shared by every event written without metadata (most of them); never mutated.
_EMPTY_META: Mapping[str, Any] = MappingProxyType({})

E = TypeVar("E", bound=Event)


def decode_bytes_entry(fields: Mapping[bytes, bytes], cls: type[E], **extra: Any) -> E:
    """Decode an entry whose names and values are bytes (what clients return by default).

    The fast path of `decode_entry` for subscribers: into ``cls`` (`Event` or a subclass, with
    ``extra`` fields), with no str round trip. Raises KeyError, ValueError or TypeError where
    the entry is not well-formed or not bytes; `decode_entry` then says precisely what is wrong.
    """
    meta = fields[b"meta"]
    mv = fields.get(b"mv")
    return cls(
        id=fields[b"id"].decode(),
        seq=int(fields[b"seq"]),
        type=_TYPES[fields[b"type"]],
        path=fields[b"path"].decode(),
        data=loads(fields[b"data"]),
        ts=int(fields[b"ts"]),
        meta=_EMPTY_META if meta == b"{}" else loads(meta),
        v=fields[b"v"].decode(),
        model_version=1 if mv is None else int(mv),
        **extra,
    )


# --- entries as replay reads them: only what folding needs, decoded when it needs it ----------

#: Event type names, from the bytes or str that clients return, to the table's own str.
_TYPES: dict[str | bytes, str] = {
    **{name: name for name in OPERATIONS},
    **{name.encode(): name for name in OPERATIONS},
}


class Entry(NamedTuple):
    """A stream entry with its seq and type read; the rest stays raw until asked for.

    Replay walks entries by seq and type only (to find where to start folding) and decodes
    the path and data of just the ones it folds: several times cheaper than an `Event` each.
    """

    id: str | bytes
    seq: int
    type: str
    #: The entry's fields as the client returned them (bytes or str names and values).
    fields: Mapping[Any, Any]

    @property
    def whole_document(self) -> bool:
        """Tell whether the entry sets the whole document (replay may start here)."""
        return OPERATIONS[self.type].whole_document

    def change(self) -> tuple[str, FieldPath, Any, str | bytes]:
        """Return what the fold needs: type, field path, decoded data, and the id for errors."""
        fields = self.fields
        try:
            try:  # clients return bytes unless told to decode
                path, data = fields[b"path"], fields[b"data"]
            except KeyError:
                path, data = fields["path"], fields["data"]
            return self.type, _field_path(path), loads(data), self.id
        except (KeyError, ValueError) as exc:
            raise CorruptEventError(
                f"stream entry {text(self.id)} does not parse: {exc!r}"
            ) from exc

    def event(self) -> Event:
        """Decode the whole entry."""
        return decode_entry(self.id, self.fields)


def read_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> Entry:
    """Read the seq and type of one entry (as XRANGE returns it); `CorruptEventError` if bad."""
    try:
        try:  # clients return bytes unless told to decode
            seq, kind = fields[b"seq"], fields[b"type"]
        except KeyError:
            seq, kind = fields["seq"], fields["type"]
        return Entry(entry_id, int(seq), _TYPES[kind], fields)
    except (KeyError, ValueError) as exc:
        raise CorruptEventError(
            f"stream entry {text(entry_id)} has no valid seq and type: {exc!r}"
        ) from exc


@functools.lru_cache(maxsize=4096)
def _field_path(raw: str | bytes) -> FieldPath:
    """Parse an event path (a few distinct ones per model, read over and over: cached)."""
    return parse_event_path(text(raw))
