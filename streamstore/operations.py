"""The operations table: per event type, its argument checks, its Redis side and its fold step.

Pure: no I/O, no clock, no ids. Every mutation the model API offers becomes one `Op` built by a
constructor below; `apply.lua` has a handler of the same name that runs the RedisJSON commands,
and the row's ``fold`` replays the event on a plain JSON document. Tests iterate `OPERATIONS`, so
an operation without a Lua handler, a fold step or a golden case fails the suite.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex, cast

from streamstore.errors import (
    CorruptEventError,
    EmptyContainerError,
    FieldTypeError,
    IndexTypeError,
    UnsafeKeyError,
    ValueRangeError,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "JSON",
    "LIST_INDEX_MAX",
    "OPERATIONS",
    "FieldPath",
    "Op",
    "Operation",
    "bracket_key",
    "delete",
    "dict_clear",
    "dict_del_item",
    "dict_pop",
    "dict_popitem",
    "dict_set_item",
    "dict_update",
    "duplicate",
    "event_path",
    "int64_parser",
    "item_json_path",
    "json_path",
    "list_append",
    "list_clear",
    "list_extend",
    "list_index",
    "list_insert",
    "list_pop",
    "needs_document",
    "number_incr",
    "out_of_int64",
    "parse_event_path",
    "save",
    "set_value",
    "snapshot",
    "stored_otherwise",
]

#: A field's position in the document: model field names from the root, e.g. ("profile", "skills").
FieldPath = tuple[str, ...]

JSON = Any  # a decoded JSON value: dict, list, str, int, float, bool or None

#: The integers RedisJSON computes with: wider ones it keeps as floats (or turns into floats at
#: their next increment), and a sum beyond them wraps round. List indexes must fit too.
INT64_MIN: int = -(2**63)
INT64_MAX: int = 2**63 - 1

#: The largest list index the write function takes (integers Lua's doubles hold exactly, like its
#: ``EXACT``): no list comes near it, so an index beyond it is clamped (insert) or out of range (pop).
LIST_INDEX_MAX: int = 2**53
_INT64_CHARS = len(str(INT64_MIN))  # the longest text of an integer that fits
_SHOWN_BITS, _SHOWN_DIGITS = 128, 40  # longer integers are named by size in errors


def event_path(path: FieldPath) -> str:
    """Render a field path as the event's ``path``: ``$`` or ``$.profile.skills``."""
    return "".join(("$", *(f".{name}" for name in path)))


def parse_event_path(text: str) -> FieldPath:
    """Parse an event ``path`` back into field names."""
    if text == "$":
        return ()
    if not text.startswith("$."):
        raise CorruptEventError(f"event path must start with '$.': {text!r}")
    return tuple(text[2:].split("."))


def json_path(path: FieldPath) -> str:
    """Render a field path as a RedisJSON path (bracket form: safe for any identifier)."""
    return "".join(("$", *(f"['{name}']" for name in path)))


def item_json_path(path: FieldPath, key: str) -> str:
    """Return the RedisJSON path of ``key`` inside the dict at ``path`` (see `bracket_key`)."""
    return json_path(path) + bracket_key(key)


def bracket_key(key: str) -> str:
    """Return the RedisJSON path step that selects ``key`` of an object: ``['key']``.

    RedisJSON reads the text between the quotes literally, has no working escape sequence, and
    drops leading spaces; so the key is wrapped in whichever quote it does not contain, and a
    key with a backslash, with both quotes, or starting with a space cannot be addressed:
    `UnsafeKeyError`, raised before anything is written.
    """
    if "\\" in key or ("'" in key and '"' in key) or key.startswith(" "):
        raise UnsafeKeyError(
            f"dict key {key!r} cannot be addressed in a RedisJSON path "
            "(it contains a backslash or both quote characters, or starts with a space)"
        )
    quote = '"' if "'" in key else "'"
    return f"[{quote}{key}{quote}]"


def list_index(index: object) -> int:
    """Return ``index`` as a list index, taking what Python's list takes: ints, bools, numpy ints.

    Anything with ``__index__`` counts; anything else (a float, a str, None) raises
    `IndexTypeError` (a `TypeError`) with the message Python's list gives.
    """
    try:
        return operator.index(cast("SupportsIndex", index))
    except TypeError:
        raise IndexTypeError(
            f"'{type(index).__name__}' object cannot be interpreted as an integer"
        ) from None


def out_of_int64(what: str, value: int | str) -> ValueRangeError:
    """Return the error for an integer (or its decimal text) beyond signed 64 bits."""
    if isinstance(value, int):
        # str() of a huge int is slow, or refused by Python's digit limit: say its size instead
        shown = str(value) if value.bit_length() <= _SHOWN_BITS else f"{value.bit_length()} bits"
    else:
        shown = value if len(value) <= _SHOWN_DIGITS else f"{len(value.lstrip('-'))} digits"
    return ValueRangeError(
        f"{what} must fit in signed 64 bits ({INT64_MIN} to {INT64_MAX}), as RedisJSON stores "
        f"integers; got {shown}"
    )


def int64_parser(what: str) -> Callable[[str], int]:
    """Return a ``parse_int`` hook for `json.loads` that refuses integers beyond signed 64 bits.

    It raises `out_of_int64` naming ``what``, without converting texts too long to fit (Python
    refuses int() of thousands of digits, and would take its time below that).
    """

    def parse_int(digits: str) -> int:
        if len(digits) > _INT64_CHARS or not INT64_MIN <= (value := int(digits)) <= INT64_MAX:
            raise out_of_int64(what, digits)
        return value

    return parse_int


def _key_json(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Op:
    """One mutation of one instance, ready to be planned: event type, field path, arguments.

    ``args`` are the handler's arguments in `apply.lua`, already JSON-encoded where they are
    values; their layout per type is set by the constructors below. ``readback`` asks the
    script to record values as RedisJSON stored them (needed where they may hold floats:
    RedisJSON's number parser can land a double one unit off the text it was given).
    """

    type: str
    path: FieldPath
    args: tuple[str, ...] = ()
    readback: bool = False


def stored_otherwise(op: Op, stored: str | bytes | None) -> bool:
    """Tell whether ``stored``, ``op``'s read-back result, differs from the value(s) it sent.

    For an op with ``readback`` the write function returns the value(s) as RedisJSON stored
    them (None: nothing read back, or queued in a pipeline); they differ only where a double
    was parsed one unit off, and then the model takes what Redis holds.
    """
    if stored is None or not op.readback:
        return False
    args = op.args
    if op.type in ("saved", "duplicated", "set", "list.append"):
        sent: JSON = json.loads(args[0])
    elif op.type == "list.extend":
        sent = [json.loads(arg) for arg in args]
    elif op.type == "list.insert":
        sent = json.loads(args[1])
    elif op.type == "dict.set_item":
        sent = json.loads(args[2])
    elif op.type == "dict.update":
        sent = {json.loads(args[i]): json.loads(args[i + 2]) for i in range(0, len(args), 3)}
    else:
        raise ValueError(f"{op.type} has no read-back value")
    return bool(json.loads(stored) != sent)


# --- constructors: the only way to make an Op ------------------------------------------------


def save(document_json: str, *, readback: bool = False) -> Op:
    """Replace the whole document (event ``saved``)."""
    return Op("saved", (), (document_json,), readback)


def duplicate(
    document_json: str, source_key: str, source_seq: int | None, *, readback: bool = False
) -> Op:
    """Start a copy's history with the source's document (event ``duplicated``).

    Its data is ``{"document": ..., "source": <source key>, "source_seq": <seq or null>}``.
    """
    seq = "null" if source_seq is None else str(source_seq)
    return Op("duplicated", (), (document_json, json.dumps(source_key), seq), readback)


def snapshot() -> Op:
    """Record the whole document as it is now (event ``snapshot``; changes nothing).

    Replay can start at the newest snapshot instead of the first event, and compaction trims
    the events before it. Its data is ``{"document": ...}``, exactly as RedisJSON stores it.
    """
    return Op("snapshot", ())


def delete(*, if_exists: bool = False) -> Op:
    """Delete the document; the stream stays as history (event ``deleted``).

    With ``if_exists``, a missing document is no error: nothing happens and no event is written.
    """
    return Op("deleted", (), ("if-exists",) if if_exists else ())


def set_value(path: FieldPath, value_json: str, *, readback: bool = False) -> Op:
    """Set one field (event ``set``)."""
    return Op("set", path, (value_json,), readback)


def number_incr(path: FieldPath, by_json: str) -> Op:
    """Add to a number (event ``number.incr``; its data also records the resulting value).

    ``by_json`` must be a JSON number: an integer within signed 64 bits (`ValueRangeError`
    otherwise: RedisJSON would add it as a float) or a finite float.
    """
    try:
        by = json.loads(by_json, parse_int=int64_parser("the amount to increase by"))
    except json.JSONDecodeError:
        by = None
    if type(by) not in (int, float):
        raise FieldTypeError(
            f"the amount to increase by must be a JSON number, not {by_json[:_SHOWN_DIGITS]!r}"
        )
    if not math.isfinite(by):
        raise ValueRangeError(f"the amount to increase by must be a finite number, not {by_json}")
    return Op("number.incr", path, (by_json,))


def list_append(path: FieldPath, value_json: str, *, readback: bool = False) -> Op:
    """Append one item to a list (event ``list.append``)."""
    return Op("list.append", path, (value_json,), readback)


def list_extend(path: FieldPath, values_json: Sequence[str], *, readback: bool = False) -> Op:
    """Append several items to a list (event ``list.extend``); needs at least one item."""
    if not values_json:
        raise ValueError("list_extend needs at least one value")
    return Op("list.extend", path, tuple(values_json), readback)


def list_insert(
    path: FieldPath, index: SupportsIndex, value_json: str, *, readback: bool = False
) -> Op:
    """Insert an item before ``index``, clamped like ``list.insert`` (event ``list.insert``).

    ``index`` is taken as Python's list takes it (`list_index`); beyond `LIST_INDEX_MAX` it is
    clamped to it, which no list reaches, so the item still lands at an end.
    """
    clamped = min(max(list_index(index), -LIST_INDEX_MAX), LIST_INDEX_MAX)
    return Op("list.insert", path, (str(clamped), value_json), readback)


def list_pop(path: FieldPath, index: SupportsIndex = -1) -> Op:
    """Remove and return the item at ``index`` (event ``list.pop``).

    ``index`` is taken as Python's list takes it (`list_index`); beyond `LIST_INDEX_MAX` it is out
    of range of any list: `EmptyContainerError` (an `IndexError`).
    """
    checked = list_index(index)
    if not -LIST_INDEX_MAX <= checked <= LIST_INDEX_MAX:
        raise EmptyContainerError("pop index out of range")
    return Op("list.pop", path, (str(checked),))


def list_clear(path: FieldPath) -> Op:
    """Empty a list (event ``list.clear``)."""
    return Op("list.clear", path)


def dict_set_item(path: FieldPath, key: str, value_json: str, *, readback: bool = False) -> Op:
    """Set one key of a dict (event ``dict.set_item``)."""
    args = (_key_json(key), item_json_path(path, key), value_json)
    return Op("dict.set_item", path, args, readback)


def dict_update(path: FieldPath, items: Sequence[tuple[str, str]], *, readback: bool = False) -> Op:
    """Set several keys of a dict (event ``dict.update``); needs at least one item."""
    if not items:
        raise ValueError("dict_update needs at least one item")
    args: list[str] = []
    for key, value_json in items:
        args += (_key_json(key), item_json_path(path, key), value_json)
    return Op("dict.update", path, tuple(args), readback)


def dict_del_item(path: FieldPath, key: str) -> Op:
    """Delete one key of a dict; a missing key is an error (event ``dict.del_item``)."""
    return Op("dict.del_item", path, (_key_json(key), item_json_path(path, key), "0"))


def dict_pop(path: FieldPath, key: str, *, has_default: bool) -> Op:
    """Remove and return one key of a dict (event ``dict.pop``).

    With a default, a missing key changes nothing and writes no event.
    """
    flag = "1" if has_default else "0"
    return Op("dict.pop", path, (_key_json(key), item_json_path(path, key), flag))


def dict_popitem(path: FieldPath) -> Op:
    """Remove and return the last key of a dict, in document order (event ``dict.popitem``)."""
    return Op("dict.popitem", path)


def dict_clear(path: FieldPath) -> Op:
    """Empty a dict (event ``dict.clear``)."""
    return Op("dict.clear", path)


def needs_document(op: Op) -> bool:
    """Tell whether ``op`` fails when the instance has no document (the script's rule too)."""
    if op.type in ("saved", "duplicated"):
        return False
    return not (op.type == "deleted" and op.args == ("if-exists",))


# --- fold steps: replay one event on a plain JSON document -----------------------------------


def _parent(doc: JSON, path: FieldPath) -> tuple[Any, str]:
    node = doc
    for name in path[:-1]:
        node = node[name]
    return node, path[-1]


def _fold_set(doc: JSON, path: FieldPath, data: JSON) -> JSON:
    parent, name = _parent(doc, path)
    parent[name] = data["value"]
    return doc


def _fold_incr(doc: JSON, path: FieldPath, data: JSON) -> JSON:
    # The result as RedisJSON computed it: adding ``by`` here could differ by a unit in the
    # last place (RedisJSON's float parsing is not exact).
    value = data["value"]
    if type(value) not in (int, float):
        raise TypeError(f"number.incr value must be a JSON number, not {value!r}")
    parent, name = _parent(doc, path)
    parent[name] = value
    return doc


def _container_step(step: Callable[[Any, JSON], None]) -> Callable[[JSON, FieldPath, JSON], JSON]:
    """Lift a step on the list/dict at ``path`` to a step on the whole document."""

    def fold(doc: JSON, path: FieldPath, data: JSON) -> JSON:
        parent, name = _parent(doc, path)
        step(parent[name], data)
        return doc

    return fold


def _replace_with(empty: Callable[[], JSON]) -> Callable[[JSON, FieldPath, JSON], JSON]:
    def fold(doc: JSON, path: FieldPath, data: JSON) -> JSON:  # noqa: ARG001 (uniform signature)
        parent, name = _parent(doc, path)
        parent[name] = empty()
        return doc

    return fold


def _event_index(container: list[JSON], data: JSON, *, end: int) -> int:
    """Return the event's ``index``: the effective position, a JSON integer in 0 .. len - end.

    The script records positions already clamped and made non-negative, so anything else (a
    float, a bool, a string, a negative or too large number) is an entry nobody wrote through
    this library: refused, where Python's list would clamp, wrap round or overflow.
    """
    index = data["index"]
    if type(index) is not int:
        raise TypeError(f"list index must be a JSON integer, not {index!r}")
    if not 0 <= index <= len(container) - end:
        raise IndexError(f"list index {index} is outside the list (length {len(container)})")
    return index


def _insert(container: list[JSON], data: JSON) -> None:
    container.insert(_event_index(container, data, end=0), data["value"])


def _pop(container: list[JSON], data: JSON) -> None:
    container.pop(_event_index(container, data, end=1))


def _del_key(container: dict[str, JSON], data: JSON) -> None:
    del container[data["key"]]


@dataclass(frozen=True, slots=True)
class Operation:
    """A row of the operations table."""

    type: str
    #: Replays the event: ``fold(document, path, data) -> document``. The document is None
    #: when the instance does not exist (before ``saved``, after ``deleted``).
    fold: Callable[[JSON, FieldPath, JSON], JSON]
    #: Whether the event's ``path`` must be the root ``$`` (whole-document events). Replay can
    #: start at such an event without the ones before it.
    whole_document: bool = False


def _fold_saved(doc: JSON, path: FieldPath, data: JSON) -> JSON:  # noqa: ARG001
    return data


def _fold_deleted(doc: JSON, path: FieldPath, data: JSON) -> JSON:  # noqa: ARG001
    return None


def _fold_document(doc: JSON, path: FieldPath, data: JSON) -> JSON:  # noqa: ARG001
    return data["document"]


OPERATIONS: dict[str, Operation] = {
    op.type: op
    for op in (
        Operation("saved", _fold_saved, whole_document=True),
        Operation("deleted", _fold_deleted, whole_document=True),
        Operation("duplicated", _fold_document, whole_document=True),
        Operation("snapshot", _fold_document, whole_document=True),
        Operation("set", _fold_set),
        Operation("number.incr", _fold_incr),
        Operation("list.append", _container_step(lambda c, d: c.append(d["value"]))),
        Operation("list.extend", _container_step(lambda c, d: c.extend(d["values"]))),
        Operation("list.insert", _container_step(_insert)),
        Operation("list.pop", _container_step(_pop)),
        Operation("list.clear", _replace_with(list)),
        Operation(
            "dict.set_item", _container_step(lambda c, d: c.__setitem__(d["key"], d["value"]))
        ),
        Operation("dict.update", _container_step(lambda c, d: c.update(d["items"]))),
        Operation("dict.del_item", _container_step(_del_key)),
        Operation("dict.pop", _container_step(_del_key)),
        Operation("dict.popitem", _container_step(_del_key)),
        Operation("dict.clear", _replace_with(dict)),
    )
}
