"""Field codecs: validate a value for one model field and encode it as the document's JSON."""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from streamstore.errors import FieldTypeError, NotJSONError, UsageError
from streamstore.operations import int64_parser

__all__ = [
    "JSON_CONFIG",
    "Codec",
    "ContainerCodecs",
    "check_int64",
    "container_codecs",
    "field_codec",
    "type_name",
]

#: How field values look in documents and events: bytes as base64 (URL-safe alphabet, as
#: pydantic writes it), datetimes as ISO 8601, no NaN or infinity (JSON has neither).
JSON_CONFIG = ConfigDict(
    ser_json_bytes="base64",
    val_json_bytes="base64",
    allow_inf_nan=False,
)


def type_name(annotation: Any) -> str:
    """Name a type for an error message: ``int``, ``list[str]``, ``int | None``."""
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@dataclass(frozen=True, slots=True)
class Codec:
    """Validation and JSON encoding for values of one type."""

    adapter: TypeAdapter[Any]
    name: str
    #: Whether values may contain floats, whose stored form must be read back (see `Op`).
    may_hold_floats: bool

    def validate(self, value: Any) -> Any:
        """Return ``value`` validated (and coerced, in pydantic's lax mode) for this type.

        Raises `FieldTypeError` (a `TypeError`) saying ``Value must be <type>``.
        """
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise FieldTypeError(f"Value must be {self.name}") from exc

    def dump_json(self, value: Any, *, check_ints: bool = True) -> str:
        """Encode an already validated value as JSON text (`NotJSONError` if it has none).

        Raises `ValueRangeError` (a `FieldTypeError`) when the text holds an integer beyond
        signed 64 bits, at any depth (see `check_int64`); ``check_ints=False`` skips that, for
        text that is not stored as a JSON value (a dict key).
        """
        try:
            text = self.adapter.dump_json(value, by_alias=False).decode()
        except PydanticSerializationError as exc:
            raise NotJSONError(f"cannot store a {self.name} as JSON: {exc}") from exc
        return check_int64(text, "Value") if check_ints else text

    def load_json(self, raw: str | bytes) -> Any:
        """Decode JSON text read from Redis into a value of this type (models: by field name)."""
        return self.adapter.validate_json(raw, by_alias=False, by_name=True)


def model_json(model: BaseModel) -> str:
    """Encode a whole model as its document's JSON text (`NotJSONError` if it has none)."""
    try:
        text = model.model_dump_json(by_alias=False)  # field names: what event paths use
    except PydanticSerializationError as exc:
        raise NotJSONError(f"cannot store {type(model).__name__} as JSON: {exc}") from exc
    return check_int64(text, f"Every integer of a {type(model).__name__}")


#: A run of 19 digits: every integer with fewer fits in signed 64 bits (2**63 has 19 digits).
# Twice as fast as [0-9]{19}: a lone leading class lets the engine skip ahead.
_LONG_DIGITS = re.compile(r"[0-9][0-9]{18}")


def check_int64(text: str, what: str) -> str:
    """Return the JSON ``text`` if all its integers fit in signed 64 bits, as RedisJSON stores them.

    Otherwise raise `ValueRangeError` (a `FieldTypeError`) saying ``what`` must fit. On the
    write path of every value, so it is cheap for the usual text: only text with a run of 19
    digits (an integer, or perhaps a string or a float) is parsed to look at its integers.
    """
    if _LONG_DIGITS.search(text) is not None:
        json.loads(text, parse_int=int64_parser(what))
    return text


def _strip(annotation: Any) -> Any:
    """Drop Annotated metadata and a None arm: ``Annotated[list[int] | None, ...]`` -> list[int]."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            arms = [a for a in get_args(annotation) if a is not type(None)]
            if len(arms) != 1:
                return annotation
            annotation = arms[0]
        else:
            return annotation


@cache
def codec_for(annotation: Any, *, arbitrary_types: bool = False) -> Codec:
    """Return the codec of a type (cached per type).

    ``arbitrary_types`` mirrors the model's ``arbitrary_types_allowed``: such values validate
    by isinstance, and storing them fails with `NotJSONError` unless pydantic can dump them.
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    else:
        config = ConfigDict(**JSON_CONFIG, arbitrary_types_allowed=arbitrary_types)
        adapter = TypeAdapter(annotation, config=config)
    return Codec(adapter, type_name(annotation), _may_hold_floats(adapter))


def _may_hold_floats(adapter: TypeAdapter[Any]) -> bool:
    """Tell from the type's JSON schema whether a value can contain a JSON float."""
    try:
        schema = adapter.json_schema()
    except Exception:  # noqa: BLE001 (no schema: assume the worst, reading back is always safe)
        return True
    return _schema_may_hold_floats(schema)


_NARROWING = ("type", "$ref", "anyOf", "allOf", "oneOf", "enum", "const", "not")


def _schema_may_hold_floats(node: Any) -> bool:
    if isinstance(node, list):
        return any(_schema_may_hold_floats(item) for item in node)
    if not isinstance(node, dict):
        return False
    if node.get("type") == "number" or (
        isinstance(node.get("type"), list) and "number" in node["type"]
    ):
        return True
    if not any(key in node for key in _NARROWING) and "properties" not in node:
        return True  # Any: could be a float
    return any(_schema_may_hold_floats(value) for key, value in node.items() if key != "default")


@cache
def field_codec(model: type[BaseModel], name: str) -> Codec:
    """Return the codec of field ``name`` of ``model``, constraints included (cached)."""
    try:
        info = model.__pydantic_fields__[name]
    except KeyError:
        raise UsageError(f"{model.__name__} has no field {name!r}") from None
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    return codec_for(annotation, arbitrary_types=_arbitrary(model))


def _arbitrary(model: type[BaseModel]) -> bool:
    return bool(model.model_config.get("arbitrary_types_allowed", False))


@dataclass(frozen=True, slots=True)
class ContainerCodecs:
    """Codecs for the items of a list field, or the keys and values of a dict field."""

    item: Codec
    key: Codec | None = None


@cache
def _container_codecs(annotation: Any, arbitrary: bool) -> ContainerCodecs:
    bare = _strip(annotation)
    origin = get_origin(bare)
    args = get_args(bare)
    if origin in (list, typing.List, set, frozenset, tuple) or bare is list:  # noqa: UP006
        return ContainerCodecs(item=codec_for(args[0] if args else Any, arbitrary_types=arbitrary))
    if origin in (dict, typing.Dict) or bare is dict:  # noqa: UP006
        key, value = args if len(args) == 2 else (str, Any)  # noqa: PLR2004
        item, key_codec = codec_for(value, arbitrary_types=arbitrary), codec_for(key)
        return ContainerCodecs(item=item, key=key_codec)
    return ContainerCodecs(item=codec_for(Any), key=codec_for(str))


@cache
def container_codecs(model: type[BaseModel], name: str) -> ContainerCodecs:
    """Return the item (and key) codecs of the list or dict field ``name`` of ``model`` (cached)."""
    annotation: Any = model.__pydantic_fields__[name].annotation
    return _container_codecs(annotation, _arbitrary(model))
