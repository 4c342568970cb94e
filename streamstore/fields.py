"""Field wrappers: the values a model's attributes return, with their Redis operations.

``user.name`` is a `RedisStr` (a real ``str``), ``user.tags`` a `RedisList` (a real ``list``),
``user.metadata`` a `RedisDict`. Each knows the model and field it came from; its async methods
validate locally, commit one event through the model, and only then change the local value.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, SupportsIndex, cast

from streamstore import operations as ops
from streamstore.errors import (
    EmptyContainerError,
    FieldTypeError,
    KeyMissingError,
    ValueRangeError,
)
from streamstore.keys import check_text
from streamstore.pipeline import active_pipeline

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from streamstore.events import Event
    from streamstore.operations import Op
    from streamstore.paths import FieldPath
    from streamstore.plan import Applied
    from streamstore.schema import Codec, ContainerCodecs

__all__ = [
    "RedisBool",
    "RedisBytes",
    "RedisDatetime",
    "RedisDict",
    "RedisFloat",
    "RedisInt",
    "RedisList",
    "RedisStr",
    "wrap_scalar",
]


class Root(Protocol):
    """What a wrapper needs from the top-level model: applying operations, its version."""

    async def _ss_apply(self, batch: Sequence[Op]) -> Applied: ...
    async def history(self, *, path: FieldPath, **filters: Any) -> list[Event]: ...
    @property
    def version(self) -> int | None: ...


class Owner(Protocol):
    """What a wrapper needs from the model that holds it (see `streamstore.model`)."""

    def _ss_locate(self, name: str) -> tuple[Root, FieldPath]: ...
    def _ss_codec(self, name: str) -> Codec: ...
    def _ss_container_codecs(self, name: str) -> ContainerCodecs: ...
    async def _ss_read(self, name: str) -> str: ...
    def _ss_store(self, name: str, value: Any) -> None: ...


_MISSING: Final = object()


class FieldRef:
    """Behaviour shared by every wrapper: which field it is, ``set`` and ``load``."""

    _ss_parent: Owner
    _ss_field: str

    def _bind(self, parent: Owner, name: str) -> None:
        self._ss_parent = parent
        self._ss_field = name

    def _codec(self) -> Codec:
        return self._ss_parent._ss_codec(self._ss_field)

    async def _write(self, build: Callable[[FieldPath], Op]) -> Applied:
        """Build this field's operation from its path and apply it on the top-level model."""
        root, path = self._ss_parent._ss_locate(self._ss_field)
        return await root._ss_apply((build(path),))

    async def set(self, value: Any) -> Any:
        """Validate ``value`` for this field, write it (event ``set``) and return it."""
        codec = self._codec()
        valid = codec.validate(value)
        raw = codec.dump_json(valid)
        readback = codec.may_hold_floats
        applied = await self._write(lambda path: ops.set_value(path, raw, readback=readback))
        stored = applied.results[0]  # None inside a pipeline: queued, not yet stored
        if codec.may_hold_floats and stored is not None:  # keep exactly what Redis stored
            valid = codec.load_json(stored)
        self._ss_parent._ss_store(self._ss_field, valid)
        return valid

    async def load(self) -> Any:
        """Read this field from Redis into the model and return the fresh value."""
        value = self._codec().load_json(await self._ss_parent._ss_read(self._ss_field))
        self._ss_parent._ss_store(self._ss_field, value)
        return value

    async def history(self, **filters: Any) -> list[Event]:
        """Return the events that touched this field: on it, inside it, or on a parent of it.

        Takes the filters of the model's ``history()`` (seq and time ranges, limit, reverse).
        """
        root, path = self._ss_parent._ss_locate(self._ss_field)
        return await root.history(path=path, **filters)


class _Number(FieldRef):
    async def increase(self, by: int | float = 1) -> Any:
        """Add ``by`` in Redis (event ``number.incr``) and return the new value.

        Refused before anything is written (`ValueRangeError`, a `FieldTypeError`): a ``by``
        beyond signed 64 bits or not finite, and a sum the local value says would leave them
        (RedisJSON would wrap it round) or would overflow a float.
        """
        codec = self._codec()
        allowed = int if isinstance(self, int) else int | float
        if isinstance(by, bool) or not isinstance(by, allowed):
            raise FieldTypeError(f"Value must be {codec.name}")
        root, path = self._ss_parent._ss_locate(self._ss_field)
        op = ops.number_incr(path, json.dumps(by))  # checks ``by`` itself
        _check_sum(cast("int | float", self), by)
        applied = await root._ss_apply((op,))
        raw = applied.results[0]
        if raw is None:  # queued in a pipeline: the value as the local state says
            value = codec.validate(cast("int | float", self) + by)
        else:
            value = codec.load_json(raw)
        self._ss_parent._ss_store(self._ss_field, value)
        return value

    increment = increase


def _check_sum(current: int | float, by: int | float) -> None:
    """Refuse an increase whose result, by the local value, RedisJSON could not store."""
    result = current + by
    if isinstance(result, int) and not ops.INT64_MIN <= result <= ops.INT64_MAX:
        raise ops.out_of_int64(f"the result of increasing {current} by {by}", result)
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueRangeError(
            f"the result of increasing {current} by {by} must be a finite number, not {result}"
        )


class RedisStr(FieldRef, str):
    """A ``str`` field value."""


class RedisBytes(FieldRef, bytes):
    """A ``bytes`` field value (base64 in Redis)."""


class RedisInt(_Number, int):
    """An ``int`` field value."""


class RedisFloat(_Number, float):
    """A ``float`` field value."""


class RedisBool(FieldRef, int):
    """A ``bool`` field value (``bool`` cannot be subclassed: this is an int that prints as one).

    It compares equal to True/False and is truthy like them; ``is True`` does not hold.
    """

    def __repr__(self) -> str:
        """Print as True/False."""
        return repr(bool(self))

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        """Format as True/False."""
        return format(bool(self), spec)


class RedisDatetime(FieldRef, datetime):
    """A ``datetime`` field value (ISO 8601 in Redis)."""


def wrap_scalar(value: Any, parent: Owner, name: str) -> Any:
    """Return ``value`` as its wrapper bound to ``parent.name``, or unchanged if it has none."""
    kind = type(value)
    wrapped: FieldRef
    if kind is str:
        wrapped = RedisStr(value)
    elif kind is int:
        wrapped = RedisInt(value)
    elif kind is bool:
        wrapped = RedisBool(value)
    elif kind is float:
        wrapped = RedisFloat(value)
    elif kind is bytes:
        wrapped = RedisBytes(value)
    elif kind is datetime:
        wrapped = RedisDatetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
            fold=value.fold,
        )
    else:
        return value
    wrapped._bind(parent, name)
    return wrapped


class _Container(FieldRef):
    """Lists and dicts are stored as wrappers, so local changes stay on the model's value."""

    #: The builtin this wrapper extends; copies and pickles are plain values of it, unbound.
    _plain: type[Any]

    def _step(self, kind: str, **data: Any) -> None:
        """Change this value as an event ``kind`` with ``data`` changes the document.

        The row's own step (see `streamstore.operations.Operation.step`), with Python values.
        """
        step = ops.OPERATIONS[kind].step
        assert step is not None, kind  # noqa: S101 (every list/dict row has one)
        step(self, data)

    def __copy__(self) -> Any:
        return self._plain(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self._plain(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self._plain, (self._plain(self),))

    async def load(self) -> Any:
        """Read this field from Redis and refresh this very object in place; return it."""
        fresh = self._codec().load_json(await self._ss_parent._ss_read(self._ss_field))
        self._replace(fresh)
        return self

    def _replace(self, fresh: Any) -> None:
        raise NotImplementedError


class RedisList(_Container, list[Any]):
    """A ``list`` field value with atomic Redis operations."""

    _plain = list

    def _item_codec(self) -> Codec:
        return self._ss_parent._ss_container_codecs(self._ss_field).item

    def _item(self, value: Any) -> tuple[Any, str]:
        codec = self._item_codec()
        valid = codec.validate(value)
        return valid, codec.dump_json(valid)

    def _replace(self, fresh: Any) -> None:
        list.clear(self)
        list.extend(self, fresh)

    async def aappend(self, value: Any) -> None:
        """Append one item (event ``list.append``)."""
        item, raw = self._item(value)
        readback = self._item_codec().may_hold_floats
        applied = await self._write(lambda path: ops.list_append(path, raw, readback=readback))
        if (stored := applied.results[0]) is not None:  # as Redis stored it (see `set`)
            item = self._item_codec().load_json(stored)
        self._step("list.append", value=item)

    async def aextend(self, values: Iterable[Any]) -> None:
        """Append several items in one event (``list.extend``); an empty iterable writes nothing."""
        checked = [self._item(v) for v in values]
        if not checked:
            return
        raws = [raw for _, raw in checked]
        readback = self._item_codec().may_hold_floats
        applied = await self._write(lambda path: ops.list_extend(path, raws, readback=readback))
        items = [item for item, _ in checked]
        if (stored := applied.results[0]) is not None:  # as Redis stored them (see `set`)
            codec = self._item_codec()
            items = [codec.load_json(text) for text in ops.array_items(stored)]
        self._step("list.extend", values=items)

    async def ainsert(self, index: SupportsIndex, value: Any) -> None:
        """Insert one item before ``index``, clamped like ``list.insert`` (event ``list.insert``).

        ``index`` is what Python's list takes (ints, bools, numpy ints); anything else raises
        `IndexTypeError` (a `TypeError`) before anything is written.
        """
        position = ops.list_index(index)
        item, raw = self._item(value)
        readback = self._item_codec().may_hold_floats
        applied = await self._write(
            lambda path: ops.list_insert(path, position, raw, readback=readback)
        )
        if (stored := applied.results[0]) is not None:  # as Redis stored it (see `set`)
            item = self._item_codec().load_json(stored)
        self._step("list.insert", index=ops.insert_position(position, len(self)), value=item)

    async def apop(self, index: SupportsIndex = -1) -> Any:
        """Remove and return the item at ``index`` (event ``list.pop``).

        ``index`` is what Python's list takes (ints, bools, numpy ints); anything else raises
        `IndexTypeError` (a `TypeError`). Raises `EmptyContainerError` (an `IndexError`) for an
        empty list or an index out of range; the check runs in Redis, against the stored list.
        Both before anything is written.
        """
        position = ops.list_index(index)
        if active_pipeline() is not None:
            if not -len(self) <= position < len(self):
                raise EmptyContainerError(
                    "pop from empty list" if not self else "pop index out of range"
                )
            value = self[position]
            await self._write(lambda path: ops.list_pop(path, position))
            self._step("list.pop", index=position % len(self))
            return value
        applied = await self._write(lambda path: ops.list_pop(path, position))
        value = self._item_codec().load_json(cast("str", applied.results[0]))
        if -len(self) <= position < len(self):
            self._step("list.pop", index=position % len(self))
        return value

    async def aclear(self) -> None:
        """Remove every item (event ``list.clear``)."""
        await self._write(ops.list_clear)
        self._step("list.clear")


class RedisDict(_Container, dict[Any, Any]):
    """A ``dict`` field value with atomic Redis operations."""

    _plain = dict

    def _codecs(self) -> tuple[Codec, Codec]:
        codecs = self._ss_parent._ss_container_codecs(self._ss_field)
        return cast("Codec", codecs.key), codecs.item

    def _key(self, key: Any, codec: Codec) -> tuple[Any, str]:
        """Validate a key; return it and its text as a JSON object key."""
        valid = codec.validate(key)
        if type(valid) is str:
            return valid, check_text(valid, "dict key")  # a lone surrogate: refused before sending
        # e.g. an int key: 1 -> "1". A JSON object key is text: any width is fine.
        dumped = codec.dump_json(valid, check_ints=False)
        return valid, json.loads(dumped) if dumped.startswith('"') else dumped

    @staticmethod
    def _value(value: Any, codec: Codec) -> tuple[Any, str]:
        valid = codec.validate(value)
        return valid, codec.dump_json(valid)

    def _replace(self, fresh: Any) -> None:
        dict.clear(self)
        dict.update(self, fresh)

    async def aset_item(self, key: Any, value: Any) -> None:
        """Set one key (event ``dict.set_item``)."""
        key_codec, value_codec = self._codecs()
        k, text = self._key(key, key_codec)
        v, raw = self._value(value, value_codec)
        readback = value_codec.may_hold_floats
        applied = await self._write(
            lambda path: ops.dict_set_item(path, text, raw, readback=readback)
        )
        if (stored := applied.results[0]) is not None:  # as Redis stored it (see `set`)
            v = value_codec.load_json(stored)
        self._step("dict.set_item", key=k, value=v)

    async def aupdate(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several keys in one event (``dict.update``); nothing to set writes nothing."""
        items = {**(other or {}), **kwargs}
        key_codec, value_codec = self._codecs()
        checked = [(self._key(k, key_codec), self._value(v, value_codec)) for k, v in items.items()]
        if not checked:
            return
        pairs = [(text, raw) for (_, text), (_, raw) in checked]
        readback = value_codec.may_hold_floats
        applied = await self._write(lambda path: ops.dict_update(path, pairs, readback=readback))
        fresh = {k: v for (k, _), (v, _) in checked}
        if (stored := applied.results[0]) is not None:  # as Redis stored them (see `set`)
            by_text = ops.object_items(stored)
            fresh = {k: value_codec.load_json(by_text[text]) for (k, text), _ in checked}
        self._step("dict.update", items=fresh)

    async def adel_item(self, key: Any) -> None:
        """Delete one key (event ``dict.del_item``); `KeyMissingError` (a KeyError) if absent."""
        k, text = self._key(key, self._codecs()[0])
        await self._write(lambda path: ops.dict_del_item(path, text))
        if k in self:
            self._step("dict.del_item", key=k)

    async def apop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove one key and return its value (event ``dict.pop``).

        A missing key returns ``default`` and writes nothing, or raises `KeyMissingError`
        (a `KeyError`) when no default is given.
        """
        k, text = self._key(key, self._codecs()[0])
        has_default = default is not _MISSING
        if active_pipeline() is not None:
            if k not in self:
                if has_default:
                    return default
                raise KeyMissingError(k)
            value = self[k]
            await self._write(lambda path: ops.dict_pop(path, text, has_default=False))
            self._step("dict.pop", key=k)
            return value
        applied = await self._write(lambda path: ops.dict_pop(path, text, has_default=has_default))
        raw = applied.results[0]
        if k in self:
            self._step("dict.pop", key=k)
        if raw is None:
            return default
        return self._codecs()[1].load_json(raw)

    async def apopitem(self) -> tuple[Any, Any]:
        """Remove the last key (document order) and return ``(key, value)`` (event ``dict.popitem``).

        Raises `KeyMissingError` (a `KeyError`) when the dict is empty.
        """
        if active_pipeline() is not None:
            if not self:
                raise KeyMissingError("popitem(): dictionary is empty")
            key, value = next(reversed(self.items()))
            await self._write(ops.dict_popitem)
            self._step("dict.popitem", key=key)
            return key, value
        applied = await self._write(ops.dict_popitem)
        key_text, raw = ops.key_and_value(cast("str", applied.results[0]))
        key_codec, value_codec = self._codecs()
        key = key_codec.validate(key_text)  # JSON object keys are text: "1" -> 1 for int keys
        if key in self:
            self._step("dict.popitem", key=key)
        return key, value_codec.load_json(raw)

    async def aclear(self) -> None:
        """Remove every key (event ``dict.clear``)."""
        await self._write(ops.dict_clear)
        self._step("dict.clear")
