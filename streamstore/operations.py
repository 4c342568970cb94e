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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex, cast

from streamstore.errors import (
    EmptyContainerError,
    FieldTypeError,
    IndexTypeError,
    ValueRangeError,
)
from streamstore.paths import FieldPath, item_json_path

__all__ = [
    "ARRAY",
    "INT64_MAX",
    "INT64_MIN",
    "INTEGER",
    "INTEGER_OR_NULL",
    "JSON",
    "LIST_INDEX_MAX",
    "NUMBER",
    "OBJECT",
    "OPERATIONS",
    "STRING",
    "Op",
    "Operation",
    "Shape",
    "array_items",
    "delete",
    "dict_clear",
    "dict_del_item",
    "dict_pop",
    "dict_popitem",
    "dict_set_item",
    "dict_update",
    "duplicate",
    "insert_position",
    "int64_parser",
    "key_and_value",
    "list_append",
    "list_clear",
    "list_extend",
    "list_index",
    "list_insert",
    "list_pop",
    "needs_document",
    "number_incr",
    "object_items",
    "one_value",
    "out_of_int64",
    "save",
    "set_value",
    "snapshot",
    "stored_otherwise",
]

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
    sent = OPERATIONS[op.type].sent
    if sent is None:
        raise ValueError(f"{op.type} has no read-back value")
    return bool(json.loads(stored) != sent(op.args))


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


def insert_position(index: int, length: int) -> int:
    """Return where ``list.insert(index, item)`` puts the item in a list of ``length`` items.

    Clamped and made non-negative, as the write function records it: 0 to ``length``.
    """
    return min(max(index + length if index < 0 else index, 0), length)


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
    """Tell whether ``op`` fails when the instance has no document (sent to the script too).

    Its row says, except that a delete with ``if_exists`` forgives a missing document.
    """
    forgiving = op.type == "deleted" and op.args == ("if-exists",)
    return OPERATIONS[op.type].needs_document and not forgiving


# --- the rows: what each event's data holds, how it replays, what the model does locally -----

#: What a decoded JSON value may be, by Python type (a JSON true/false is bool, never int).
OBJECT, ARRAY, STRING = frozenset({dict}), frozenset({list}), frozenset({str})
INTEGER, NUMBER, INTEGER_OR_NULL = (
    frozenset({int}),
    frozenset({int, float}),
    frozenset({int, type(None)}),
)

#: An event's data: the keys it holds, and what each may be (None: any JSON value).
Shape = Mapping[str, frozenset[type] | None]

Fold = Callable[[JSON, FieldPath, JSON], JSON]
Step = Callable[[Any, JSON], None]


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


def _fold_saved(doc: JSON, path: FieldPath, data: JSON) -> JSON:  # noqa: ARG001
    return data


def _fold_deleted(doc: JSON, path: FieldPath, data: JSON) -> JSON:  # noqa: ARG001
    return None


def _fold_document(doc: JSON, path: FieldPath, data: JSON) -> JSON:  # noqa: ARG001
    return data["document"]


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


def _append(container: list[JSON], data: JSON) -> None:
    container.append(data["value"])


def _extend(container: list[JSON], data: JSON) -> None:
    container.extend(data["values"])


def _insert(container: list[JSON], data: JSON) -> None:
    container.insert(_event_index(container, data, end=0), data["value"])


def _pop(container: list[JSON], data: JSON) -> None:
    container.pop(_event_index(container, data, end=1))


def _set_key(container: dict[str, JSON], data: JSON) -> None:
    container[data["key"]] = data["value"]


def _update(container: dict[str, JSON], data: JSON) -> None:
    container.update(data["items"])


def _del_key(container: dict[str, JSON], data: JSON) -> None:
    del container[data["key"]]


def _clear(container: list[JSON] | dict[str, JSON], data: JSON) -> None:  # noqa: ARG001
    container.clear()


def _sent_value(position: int) -> Callable[[tuple[str, ...]], JSON]:
    """Read back one value: the one an op sent is its argument at ``position``."""
    return lambda args: json.loads(args[position])


def _sent_values(args: tuple[str, ...]) -> JSON:
    return [json.loads(arg) for arg in args]


def _sent_items(args: tuple[str, ...]) -> JSON:
    """``dict.update`` sends (key, item path, value) per item: the object of keys to values."""
    return {json.loads(args[i]): json.loads(args[i + 2]) for i in range(0, len(args), 3)}


def one_value(raw: str) -> str:
    """Return a result that is one value's JSON text as it is."""
    return raw


def array_items(raw: str) -> list[str]:
    """Split a result that is a JSON array into its items' JSON texts."""
    return [json.dumps(item) for item in json.loads(raw)]


def object_items(raw: str) -> dict[str, str]:
    """Split a result that is a JSON object into its keys and their values' JSON texts."""
    return {key: json.dumps(value) for key, value in json.loads(raw).items()}


def key_and_value(raw: str) -> tuple[str, str]:
    """Split a ``[key, value]`` result into the key and the value's JSON text, as sent."""
    key, end = json.JSONDecoder().raw_decode(raw, 1)
    return key, raw[end + 1 : -1]


@dataclass(frozen=True, slots=True)
class Operation:
    """A row of the operations table: what streamstore knows of one event type.

    ``apply.lua`` has a handler of the same name holding the row's Redis commands (and its own
    check of the arguments it is sent); everything else about the type is here, and the event
    decoder, the fold, the model's wrappers, the pipeline and docs/events.md follow it.
    """

    type: str
    #: The keys the event's data holds and what each may be; readers refuse an entry whose
    #: data does not fit (`streamstore.events.check_data`). ``saved`` data is the document.
    data: Shape
    #: Replays the event: ``fold(document, path, data) -> document``. The document is None
    #: when the instance does not exist (before ``saved``, after ``deleted``).
    fold: Fold
    #: For list and dict events, the change itself: ``step(container, data)``. The fold runs
    #: it on the document's container, and the model on its own value, with the event's data
    #: as Python values: so local state changes exactly as the document does.
    step: Step | None = None
    #: Whether the event's ``path`` is the root ``$`` (whole-document events). Replay can
    #: start at such an event without the ones before it.
    whole_document: bool = False
    #: Whether the write fails when the instance has no document (see `needs_document`).
    needs_document: bool = True
    #: Whether the event makes or removes the document: the instance is then listed in (or
    #: dropped from) its partition's index of live instances.
    existence: bool = False
    #: For types whose values RedisJSON may store otherwise (floats): the value(s) an `Op`
    #: sent, from its arguments, to compare with the value(s) read back (`stored_otherwise`).
    sent: Callable[[tuple[str, ...]], JSON] | None = None
    #: How the script's result for the operation splits into JSON texts the model decodes
    #: (None: it returns nothing).
    result: Callable[[str], Any] | None = None
    #: Whether its answer in a pipeline comes from local state: the pipeline then requires
    #: the instance unchanged since it was read, so Redis gives that same answer.
    guarded: bool = False


def _on_container(step: Step) -> Fold:
    """Lift a step on the list/dict at ``path`` to a fold step on the whole document."""

    def fold(doc: JSON, path: FieldPath, data: JSON) -> JSON:
        parent, name = _parent(doc, path)
        step(parent[name], data)
        return doc

    return fold


def _container(kind: str, data: Shape, step: Step, **facts: Any) -> Operation:
    return Operation(kind, data, _on_container(step), step, **facts)


_VALUE: Shape = {"value": None}
_KEYED: Shape = {"key": STRING, "value": None}

OPERATIONS: dict[str, Operation] = {
    op.type: op
    for op in (
        Operation(
            "saved",
            {},
            _fold_saved,
            whole_document=True,
            existence=True,
            needs_document=False,
            sent=_sent_value(0),
            result=one_value,
        ),
        Operation("deleted", {}, _fold_deleted, whole_document=True, existence=True),
        Operation(
            "duplicated",
            {"document": OBJECT, "source": STRING, "source_seq": INTEGER_OR_NULL},
            _fold_document,
            whole_document=True,
            existence=True,
            needs_document=False,
            sent=_sent_value(0),
            result=one_value,
        ),
        Operation("snapshot", {"document": OBJECT}, _fold_document, whole_document=True),
        Operation("set", _VALUE, _fold_set, sent=_sent_value(0), result=one_value),
        Operation("number.incr", {"by": NUMBER, "value": NUMBER}, _fold_incr, result=one_value),
        _container("list.append", _VALUE, _append, sent=_sent_value(0), result=one_value),
        _container(
            "list.extend", {"values": ARRAY}, _extend, sent=_sent_values, result=array_items
        ),
        _container(
            "list.insert",
            {"index": INTEGER, "value": None},
            _insert,
            sent=_sent_value(1),
            result=one_value,
        ),
        _container(
            "list.pop", {"index": INTEGER, "value": None}, _pop, result=one_value, guarded=True
        ),
        _container("list.clear", {}, _clear),
        _container("dict.set_item", _KEYED, _set_key, sent=_sent_value(2), result=one_value),
        _container(
            "dict.update", {"items": OBJECT}, _update, sent=_sent_items, result=object_items
        ),
        _container("dict.del_item", _KEYED, _del_key, result=one_value),
        _container("dict.pop", _KEYED, _del_key, result=one_value, guarded=True),
        _container("dict.popitem", _KEYED, _del_key, result=key_and_value, guarded=True),
        _container("dict.clear", {}, _clear),
    )
}
