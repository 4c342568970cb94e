"""Reading the seed libraries' hashes: each field decoded as pydantic-redis or -aioredis wrote it.

Decoding, per library (field types are the streamstore model's annotations):

- pydantic-redis 0.7.0: record keys ``{class name, lowercased}_%&_{pk}``. A ``str`` field
  (str subclasses, str enums and ``Literal`` strings too) is raw text, and ``null`` in an
  ``Optional`` one is None; every other value is compact JSON, or raw text when it is not JSON.
  A plain pydantic model inside is a JSON string within the JSON (double-encoded). Nested
  pydantic-redis models are their own hashes: fields ``__f`` (the key), ``___f``, ``____f`` and
  ``_____f`` (JSON holding keys, in a list, tuple or dict) refer to them; they are loaded,
  recursively, and decoded as the field's model type.
- pydantic-aioredis 1.4.0: record keys ``[{prefix}{sep}]{table}{sep}{pk}``, with the prefix
  and separator lowercased as the library does. A ``str`` field is raw text; every other value
  is JSON (int and float are plain text, which is JSON too), decoded a second time when it is
  a container whose first decoding gave a string (``List[bool]``, ``Dict[str, Any]``, tuples,
  lists of models); ``None`` in an ``Optional`` field is None. Nested models are embedded JSON.

Both libraries read the text ``null`` (pydantic-redis) or ``None`` (pydantic-aioredis) in an
``Optional[str]`` field as None; so does the import. Formats older than those releases (quoted
strings and raw-pk references of early pydantic-redis, its ``__%&l_``/``__%&t_`` prefixes before
0.2.0, the ``str()`` values of early pydantic-aioredis) and custom ``serialize_partially`` or
``json_default`` encodings are not decoded: such records fail validation and are reported.
"""

from __future__ import annotations

import collections
import collections.abc
import json
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from streamstore.connection import Client

__all__ = [
    "PR_SEPARATOR",
    "DecodeError",
    "Nested",
    "as_text",
    "decode_aioredis",
    "decode_pydantic_redis",
    "hash_text",
    "load_nested",
    "loads_or_text",
]

#: pydantic-redis: what joins the model name and the pk in every record key and reference.
PR_SEPARATOR = "_%&_"
#: A pydantic-redis reference to a nested record, as its Lua scripts find them.
_PR_REFERENCE = re.compile(r"[A-Za-z0-9_]+_%&_")
_SEQUENCES = (
    list,
    set,
    frozenset,
    collections.deque,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.MutableSet,
    collections.abc.Collection,
    collections.abc.Iterable,
)
_MAPPINGS = (
    dict,
    collections.defaultdict,
    collections.OrderedDict,
    collections.abc.Mapping,
    collections.abc.MutableMapping,
)


class DecodeError(Exception):
    """An old record cannot be turned into the model's data (the message says why)."""


@dataclass(slots=True)
class Nested:
    """The nested records pydantic-redis records of a batch refer to, loaded ahead."""

    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Referenced keys that cannot be used, and why ("does not exist").
    problems: dict[str, str] = field(default_factory=dict)

    def __contains__(self, key: str) -> bool:
        """Tell whether ``key`` was looked up (found, or found to be a problem)."""
        return key in self.hashes or key in self.problems


def as_text(value: bytes | str, errors: str = "strict") -> str:
    """Return Redis bytes (or str, from a decoding client) as UTF-8 text."""
    return value.decode("utf-8", errors) if isinstance(value, bytes) else value


def hash_text(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """Return a hash's field names and values as text."""
    return {as_text(name): as_text(value) for name, value in raw.items()}


def loads_or_text(text: str) -> Any:
    """Decode JSON, or return the text as it is when it is not JSON (as both libraries read)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- field types ------------------------------------------------------------------------------


def _annotation(model: type[BaseModel] | None, name: str) -> Any:
    """Return the type of ``model``'s field ``name``; Any for an unknown model or field."""
    if model is None or name not in model.__pydantic_fields__:
        return Any
    return model.__pydantic_fields__[name].annotation


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Drop Annotated metadata and a None arm; say whether None was allowed."""
    nullable = annotation is None or annotation is type(None)
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            arms = [arm for arm in get_args(annotation) if arm is not type(None)]
            nullable = nullable or len(arms) < len(get_args(annotation))
            if len(arms) != 1:
                return annotation, nullable
            annotation = arms[0]
        else:
            return annotation, nullable


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """Return the model class a value of this type is (the only one in a union), else None."""
    bare, _ = _unwrap(annotation)
    if get_origin(bare) in (Union, types.UnionType):
        models = [arm for arm in get_args(bare) if _model_of(arm) is not None]
        return _model_of(models[0]) if len(models) == 1 else None
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return bare
    return None


def _is_text(annotation: Any) -> bool:
    """Tell whether pydantic-redis stores this type raw: str, its subclasses, str literals."""
    bare, _ = _unwrap(annotation)
    if get_origin(bare) is Literal:
        return all(isinstance(arg, str) for arg in get_args(bare))
    return isinstance(bare, type) and issubclass(bare, str)


def _is_container(annotation: Any) -> bool:
    """Tell whether a type is a list, tuple, set or dict (pydantic-aioredis's JSON shapes)."""
    bare, _ = _unwrap(annotation)
    kind = get_origin(bare) or bare
    return kind is tuple or kind in _SEQUENCES or kind in _MAPPINGS


def _item_types(annotation: Any, count: int) -> Iterator[Any]:
    """Yield the type of each of ``count`` items of a list or tuple of this type."""
    bare, _ = _unwrap(annotation)
    origin, args = get_origin(bare), get_args(bare)
    if origin is tuple and args and args[-1] is not Ellipsis:
        yield from (args[i] if i < len(args) else Any for i in range(count))
    elif (origin is tuple or origin in _SEQUENCES) and args:
        yield from (args[0] for _ in range(count))
    else:
        yield from (Any for _ in range(count))


def _value_type(annotation: Any) -> Any:
    """Return the type of the values of a dict of this type."""
    bare, _ = _unwrap(annotation)
    args = get_args(bare)
    return args[1] if get_origin(bare) in _MAPPINGS and len(args) == 2 else Any  # noqa: PLR2004


# --- pydantic-aioredis ------------------------------------------------------------------------


def decode_aioredis(fields: Mapping[str, str], model: type[BaseModel]) -> dict[str, Any]:
    """Decode a pydantic-aioredis hash into the model's data (see the module's docstring)."""
    data: dict[str, Any] = {}
    for name, raw in fields.items():
        annotation = _annotation(model, name)
        bare, nullable = _unwrap(annotation)
        value: Any = raw
        if bare is not str:
            value = loads_or_text(raw)
            if isinstance(value, str) and _is_container(bare):  # json.dumps'd twice
                value = loads_or_text(value)
        data[name] = None if nullable and value == "None" else value
    return data


# --- pydantic-redis ---------------------------------------------------------------------------


def _references(fields: Mapping[str, str]) -> Iterator[str]:
    """Yield the keys of the nested records a pydantic-redis hash refers to."""
    for name, raw in fields.items():
        if name.startswith("___"):  # a list, tuple or dict of references, as JSON
            yield from (s for s in _strings(loads_or_text(raw)) if _PR_REFERENCE.match(s))
        elif name.startswith("__") and _PR_REFERENCE.match(raw):  # one reference, raw
            yield raw


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


async def load_nested(client: Client, tops: Iterable[Mapping[str, str]]) -> Nested:
    """Load every nested record the hashes ``tops`` refer to, level by level (a round trip each).

    A record shared by many (one author of many books) is a single hash: it is read once.
    """
    nested = Nested()
    wanted = {key for fields in tops for key in _references(fields)}
    while wanted:
        order = sorted(wanted)
        # Another library's hashes, on the caller's client: see `importer._Importer._read`.
        async with client.pipeline(transaction=False) as pipe:
            for key in order:
                pipe.hgetall(key)
            replies = await pipe.execute(raise_on_error=False)
        fresh: list[dict[str, str]] = []
        for key, reply in zip(order, replies, strict=True):
            if isinstance(reply, Exception):
                nested.problems[key] = "is not a hash"
            elif not reply:
                nested.problems[key] = "does not exist"
            else:
                try:
                    nested.hashes[key] = hash_text(reply)
                except UnicodeDecodeError:
                    nested.problems[key] = "is not UTF-8 text"
                else:
                    fresh.append(nested.hashes[key])
        wanted = {key for fields in fresh for key in _references(fields) if key not in nested}
    return nested


def decode_pydantic_redis(
    fields: Mapping[str, str],
    model: type[BaseModel] | None,
    nested: Nested,
    path: tuple[str, ...],
) -> dict[str, Any]:
    """Decode a pydantic-redis hash into ``model``'s data, nested records included.

    ``model`` None (a nested record whose type is a union of models) decodes without types.
    ``path`` holds the keys being decoded, outermost first: a reference back to one is a cycle.
    """
    data: dict[str, Any] = {}
    for name, raw in fields.items():
        field_name = name.lstrip("_")  # __f, ___f, ____f, _____f: references
        annotation = _annotation(model, field_name)
        references = name.startswith("__")
        if references:
            value = (
                None if raw == "null" else raw if not name.startswith("___") else loads_or_text(raw)
            )
        elif _is_text(annotation):
            value = None if raw == "null" and _unwrap(annotation)[1] else raw
        else:
            value = loads_or_text(raw)
        data[field_name] = _pr_fill(value, annotation, nested, path, references=references)
    return data


def _pr_fill(
    value: Any,
    annotation: Any,
    nested: Nested,
    path: tuple[str, ...],
    *,
    references: bool,
) -> Any:
    """Put nested models where ``value``, of type ``annotation``, holds them as strings.

    A string where the type says a model is a reference to a nested record (in a reference
    field) or a plain pydantic model that pydantic-redis JSON-encoded twice.
    """
    if isinstance(value, str):
        if references and value in nested and not _is_text(annotation):
            return _pr_nested(value, _model_of(annotation), nested, path)
        return value if _model_of(annotation) is None else loads_or_text(value)
    if isinstance(value, list):
        items = _item_types(annotation, len(value))
        return [
            _pr_fill(item, kind, nested, path, references=references)
            for item, kind in zip(value, items, strict=True)
        ]
    if isinstance(value, dict) and _model_of(annotation) is None:
        kind = _value_type(annotation)
        return {
            name: _pr_fill(item, kind, nested, path, references=references)
            for name, item in value.items()
        }
    return value


def _pr_nested(
    key: str, model: type[BaseModel] | None, nested: Nested, path: tuple[str, ...]
) -> dict[str, Any]:
    """Decode the nested record at ``key`` as ``model``'s data."""
    if key in path:
        cycle = " -> ".join((*path[path.index(key) :], key))
        raise DecodeError(f"nested records refer to each other in a cycle: {cycle}")
    if key in nested.problems:
        raise DecodeError(f"nested record {key} {nested.problems[key]}")
    return decode_pydantic_redis(nested.hashes[key], model, nested, (*path, key))
