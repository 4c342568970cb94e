"""Events as read back from a stream: the typed record and its decoding from entry fields."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import orjson

from streamstore.errors import CorruptEventError
from streamstore.keys import FEED_FIELDS, REQUIRED_EVENT_FIELDS
from streamstore.operations import (
    ARRAY,
    INTEGER,
    INTEGER_OR_NULL,
    NUMBER,
    OBJECT,
    OPERATIONS,
    STRING,
)
from streamstore.paths import FieldPath, parse_event_path

__all__ = [
    "FEED_LAYOUT",
    "STREAM_LAYOUT",
    "Entry",
    "Event",
    "check_data",
    "corrupt",
    "data_fits",
    "decode_bytes_entry",
    "decode_entry",
    "decode_feed_entry",
    "flat_entry",
    "in_stream",
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
    """Decode one stream entry (as returned by XRANGE) into an `Event`, checking all of it.

    Raises `CorruptEventError` naming the entry and what is wrong with it: a field missing or
    out of place, bytes that are not UTF-8, a value that does not parse, data without the keys
    its event type needs (see `check_data`).
    """
    eid = text(entry_id)
    return _decode(eid, _texts(eid, fields), STREAM_LAYOUT)


def decode_feed_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> tuple[str, Event]:
    """Decode a change feed entry: the instance's pk, and its event (with the stream's id).

    Raises `CorruptEventError` as `decode_entry` does; the entry is named by its feed id.
    """
    fid = text(entry_id)
    values = _texts(fid, fields)
    event = _decode(fid, values, FEED_LAYOUT)
    return values["pk"], event


def flat_entry(entry: Sequence[Any]) -> tuple[Any, dict[Any, Any]]:
    """Return an entry of a script reply, ``[id, [name, value, ...]]``, as XRANGE gives it."""
    entry_id, flat = entry
    return entry_id, dict(zip(flat[0::2], flat[1::2], strict=True))


def corrupt(entry_id: str | bytes, reason: str) -> CorruptEventError:
    """Return the error for an entry that cannot be read: ``entry <id>: <reason>``."""
    return CorruptEventError(f"entry {text(entry_id)}: {reason}")


def in_stream(stream: str, exc: CorruptEventError) -> CorruptEventError:
    """Return ``exc`` with the stream (or feed) key in front, once: ``<key> entry <id>: ...``."""
    message = str(exc)
    if message.startswith(stream):
        return exc
    return CorruptEventError(f"{stream} {message}")


def data_fits(kind: str, data: Any) -> bool:
    """Tell whether `check_data` finds nothing wrong (faster: no message)."""
    if type(data) is not dict:
        return False
    for key, allowed in _ALLOWED[kind]:
        if key not in data or (allowed is not None and type(data[key]) not in allowed):
            return False
    return True


def check_data(kind: str, data: Any) -> str | None:
    """Tell what is wrong with ``data`` as the data of an event of type ``kind`` (None: fine).

    The keys each event type's data holds, and the types the fold relies on: the ``data`` of
    its row in the operations table (docs/events.md lists them).
    """
    if type(data) is not dict:
        return f"data is {_json_type(data)}, not an object"
    shape = OPERATIONS[kind].data
    for key, wanted in shape.items():
        if key not in data:
            return f"data lacks {key!r} (a {kind} event has {sorted(shape)})"
        if wanted is not None and type(data[key]) not in wanted:
            return f"data[{key!r}] is {_json_type(data[key])}, not {_TYPE_NAMES[wanted]}"
    return None


_ALLOWED = {kind: tuple(row.data.items()) for kind, row in OPERATIONS.items()}

_TYPE_NAMES: dict[frozenset[type], str] = {
    OBJECT: "an object",
    ARRAY: "an array",
    STRING: "a string",
    INTEGER: "an integer",
    NUMBER: "a number",
    INTEGER_OR_NULL: "an integer or null",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in (
        (dict, "an object"),
        (list, "an array"),
        (str, "a string"),
        (int, "an integer"),
        (float, "a number"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


#: The fields an entry starts with, in order: ``seq`` first in an instance stream (the write
#: script reads it there), ``pk`` and ``id`` before it in a change feed.
STREAM_LAYOUT = ("seq",)
FEED_LAYOUT = ("pk", "id", "seq")

_STREAM_ID = re.compile(r"[0-9]+-[0-9]+")
#: How much of a bad value an error message shows.
_SHOWN = 60


def _shown(value: str | bytes) -> str:
    """Return a bad value for an error message: its repr (no control characters), cut short."""
    shown = repr(value)
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 1] + "…"


def _texts(eid: str, fields: Mapping[Any, Any]) -> dict[str, str]:
    """Return an entry's names and values as str; `CorruptEventError` where one is not UTF-8."""
    values: dict[str, str] = {}
    for name, value in fields.items():
        try:
            key = text(name)
        except UnicodeDecodeError:
            raise corrupt(eid, f"has a field name that is not UTF-8: {_shown(name)}") from None
        try:
            values[key] = text(value)
        except UnicodeDecodeError:
            raise corrupt(eid, f"field {key!r} is not UTF-8 text: {_shown(value)}") from None
    return values


def _decode(eid: str, values: dict[str, str], layout: tuple[str, ...]) -> Event:
    """Check and decode an entry's str fields (see `decode_entry`)."""
    missing = [name for name in (*layout[:-1], *REQUIRED_EVENT_FIELDS) if name not in values]
    if missing:
        raise corrupt(eid, f"lacks fields {missing}")
    first = tuple(values)[: len(layout)]
    if first != layout:
        raise corrupt(eid, f"starts with fields {list(first)}, not {list(layout)}")
    event_id = eid
    if layout is FEED_LAYOUT:  # the event's id is that of the instance stream's entry
        event_id = values["id"]
        if not _STREAM_ID.fullmatch(event_id):
            raise corrupt(eid, f"field 'id' is {_shown(event_id)}, not a stream entry id")
    seq = _count(eid, values, "seq", 1)
    kind = values["type"]
    if kind not in OPERATIONS:
        raise corrupt(eid, f"has unknown event type {_shown(kind)}")
    path = values["path"]
    _check_path(eid, kind, path)
    data = _json(eid, values, "data")
    problem = check_data(kind, data)
    if problem is not None:
        raise corrupt(eid, f"({kind} at {path}) {problem}")
    meta = _EMPTY_META if values["meta"] == "{}" else _json(eid, values, "meta")
    if not isinstance(meta, Mapping):
        raise corrupt(eid, f"meta is {_json_type(meta)}, not an object")
    return Event(
        id=event_id,
        seq=seq,
        type=kind,
        path=path,
        data=data,
        ts=_count(eid, values, "ts", 0),
        meta=meta,
        v=values["v"],
        model_version=_count(eid, values, "mv", 1) if "mv" in values else 1,
    )


def _count(eid: str, values: dict[str, str], name: str, least: int) -> int:
    """Read an integer field that must be ``least`` or more."""
    raw = values[name]
    try:
        found = int(raw)
    except ValueError:
        found = least - 1
    if found < least:
        raise corrupt(eid, f"field {name!r} does not parse as an integer >= {least}: {_shown(raw)}")
    return found


def _json(eid: str, values: dict[str, str], name: str) -> Any:
    try:
        return loads(values[name])
    except ValueError as exc:
        raise corrupt(eid, f"field {name!r} does not parse as JSON ({exc})") from exc


def _check_path(eid: str | bytes, kind: str, path: str) -> FieldPath:
    """Parse an event path, and check it fits the event type (``$`` for whole documents)."""
    try:
        names = _parsed_path(path)
    except ValueError:
        raise corrupt(eid, f"path {_shown(path)} is not '$' or '$.name[.name...]'") from None
    if OPERATIONS[kind].whole_document != (not names):
        where = "'$'" if OPERATIONS[kind].whole_document else "a field, not '$'"
        raise corrupt(eid, f"path {_shown(path)} of a {kind} event must be {where}")
    return names


@functools.lru_cache(maxsize=4096)
def _parsed_path(path: str) -> FieldPath:
    """Parse an event path (a few distinct ones per model, read over and over: cached).

    ValueError unless it is ``$`` or ``$.`` and non-empty names joined by dots.
    """
    names = parse_event_path(path)
    if not all(names):
        raise ValueError(path)
    return names


#: Shared by every event written without metadata (most of them); never mutated.
_EMPTY_META: Mapping[str, Any] = MappingProxyType({})

E = TypeVar("E", bound=Event)


def decode_bytes_entry(fields: Mapping[bytes, bytes], cls: type[E], **extra: Any) -> E:
    """Decode a change feed entry whose names and values are bytes (clients' default).

    The fast path of `decode_feed_entry` for subscribers: into ``cls`` (`Event` or a subclass,
    with ``extra`` fields), with no str round trip, checking what `decode_feed_entry` checks.
    Raises KeyError, ValueError or TypeError where the entry is not well-formed or not bytes;
    `decode_feed_entry` then says precisely what is wrong.
    """
    names = iter(fields)
    if next(names) != b"pk" or next(names) != b"id" or next(names) != b"seq":
        raise ValueError("fields out of place")
    if len(fields) != len(FEED_FIELDS) - 1 + (b"mv" in fields):
        raise ValueError("other fields: their names must be checked")
    kind = _TYPES[fields[b"type"]]
    path = _bytes_path(kind, fields[b"path"])
    data = loads(fields[b"data"])
    if not data_fits(kind, data):
        raise ValueError("bad data")
    raw_meta = fields[b"meta"]
    meta = _EMPTY_META if raw_meta == b"{}" else loads(raw_meta)
    if meta is not _EMPTY_META and type(meta) is not dict:
        raise TypeError("meta is not an object")
    mv = fields.get(b"mv")
    event_id = fields[b"id"].decode()
    if not _STREAM_ID.fullmatch(event_id):
        raise ValueError("not a stream entry id")
    event = cls(
        id=event_id,
        seq=int(fields[b"seq"]),
        type=kind,
        path=path,
        data=data,
        ts=int(fields[b"ts"]),
        meta=meta,
        v=fields[b"v"].decode(),
        model_version=1 if mv is None else int(mv),
        **extra,
    )
    if event.seq < 1 or event.ts < 0 or event.model_version < 1:
        raise ValueError("out of range")
    return event


@functools.lru_cache(maxsize=4096)
def _bytes_path(kind: str, raw: bytes) -> str:
    """Return a checked event path as str (cached: a few distinct ones per model)."""
    path = raw.decode()
    _check_path("", kind, path)
    return path


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
        """Return what the fold needs: type, field path, decoded data, and the id for errors.

        Checks what it decodes (as `decode_entry` does); `CorruptEventError` if it is bad.
        """
        fields = self.fields
        try:
            try:  # clients return bytes unless told to decode
                path, data, meta = fields[b"path"], fields[b"data"], fields[b"meta"]
            except KeyError:
                path, data, meta = fields["path"], fields["data"], fields["meta"]
            names = _entry_path(self.type, path)
            value = loads(data)
            # Metadata and field names are not folded, but a bad one makes the entry corrupt
            # all the same (as history() finds it). Names that are not ASCII get the full look.
            if meta not in _NO_META and type(loads(meta)) is not dict:
                raise TypeError("meta is not an object")  # noqa: TRY301 (one way out for all)
        except (KeyError, ValueError, TypeError) as exc:
            self.event()  # says precisely what is wrong
            raise corrupt(self.id, f"does not parse: {exc!r}") from exc
        if not (data_fits(self.type, value) and _usual_names(fields)):
            self.event()  # says what is wrong, if anything (other fields may be new ones)
        return self.type, names, value, self.id

    def event(self) -> Event:
        """Decode the whole entry."""
        return decode_entry(self.id, self.fields)


def read_entry(entry_id: str | bytes, fields: Mapping[Any, Any]) -> Entry:
    """Read the seq and type of one entry (as XRANGE returns it); `CorruptEventError` if bad.

    Only those two are checked (and that ``seq`` comes first); `Entry.change` and `Entry.event`
    check the rest when they decode it.
    """
    try:
        try:  # clients return bytes unless told to decode
            seq, kind = fields[b"seq"], fields[b"type"]
        except KeyError:
            seq, kind = fields["seq"], fields["type"]
        entry = Entry(entry_id, int(seq), _TYPES[kind], fields)
    except (KeyError, ValueError, TypeError) as exc:
        decode_entry(entry_id, fields)  # says precisely what is wrong
        raise corrupt(entry_id, f"has no valid seq and type: {exc!r}") from exc
    # seq first: the write script reads it there.
    if entry.seq < 1 or next(iter(fields)) not in _SEQ_NAMES:
        decode_entry(entry_id, fields)
    return entry


_SEQ_NAMES = (b"seq", "seq")
_NO_META = (b"{}", "{}")


def _usual_names(fields: Mapping[Any, Any]) -> bool:
    """Tell whether an entry has exactly the fields streamstore writes, with ``ts`` a number.

    Cheap, for replay: it reads only seq, type, path, data and meta itself.
    """
    if b"ts" in fields:
        ts, has_v, mv = fields[b"ts"], b"v" in fields, fields.get(b"mv", b"1")
    else:
        ts, has_v, mv = fields.get("ts", ""), "v" in fields, fields.get("mv", "1")
    has_mv = b"mv" in fields or "mv" in fields
    return (
        has_v
        and ts.isdigit()
        and mv.isdigit()
        and len(fields) == len(REQUIRED_EVENT_FIELDS) + has_mv
    )


@functools.lru_cache(maxsize=4096)
def _entry_path(kind: str, raw: str | bytes) -> FieldPath:
    """Parse and check an entry's path as the fold needs it (cached, as `_parsed_path`)."""
    return _check_path("", kind, text(raw))
