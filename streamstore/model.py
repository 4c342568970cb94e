"""The model API: BaseRedisModel, and Redis-enabled variants of the plain models nested in it."""

from __future__ import annotations

import copy
import types
import uuid
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Literal,
    Self,
    Union,
    get_args,
    get_origin,
)

from pydantic import BaseModel, ConfigDict

from streamstore import operations as ops
from streamstore._logging import debug_enabled, get_logger
from streamstore.connection import ClientSource, resolve_client
from streamstore.context import current_meta_json
from streamstore.errors import (
    ConfigurationError,
    CorruptDocumentError,
    DocumentNotFoundError,
    UsageError,
)
from streamstore.executor import get_document, get_path, read_events, run_plan
from streamstore.fields import RedisDict, RedisList, wrap_scalar
from streamstore.keys import InstanceKeys, KeySpace
from streamstore.plan import build_plan
from streamstore.schema import JSON_CONFIG, codec_for, container_codecs, field_codec, model_json

if TYPE_CHECKING:
    from collections.abc import Sequence

    import redis.asyncio as aioredis

    from streamstore.events import Event
    from streamstore.operations import FieldPath, Op
    from streamstore.plan import Applied
    from streamstore.schema import Codec, ContainerCodecs

__all__ = ["BaseRedisModel", "ModelMeta", "RedisEnabledModel", "nested_variant"]

#: Model settings every Redis-enabled model runs with (a user's own settings are kept otherwise).
ENABLED_CONFIG = ConfigDict(
    validate_assignment=True,  # `user.age = "x"` fails locally, like `await user.age.set("x")`
    validate_default=True,  # defaults of nested models become Redis-enabled too
    from_attributes=True,  # a plain nested model instance validates into its enabled variant
    **JSON_CONFIG,
)


class RedisEnabledModel(BaseModel):
    """A model whose field values are Redis wrappers that know where they live.

    Attribute access returns wrappers bound to this model and field: `RedisStr` and friends
    (made on access), and the stored `RedisList` / `RedisDict` / nested model (bound on access,
    so the binding is always the path just walked). Pydantic itself reads ``__dict__`` and never
    sees a wrapper it did not store.
    """

    __slots__ = ("_ss_field", "_ss_parent")
    model_config = ENABLED_CONFIG

    if TYPE_CHECKING:
        _ss_parent: RedisEnabledModel | None
        _ss_field: str
        #: For a variant of a plain nested model: that model.
        __ss_origin__: ClassVar[type[BaseModel]]

    @classmethod
    def __pydantic_on_complete__(cls) -> None:
        """Swap plain nested models in field types for their Redis-enabled variants.

        Runs once the field types are resolved: at class creation, or later for forward
        references (a nested model defined below its user, ``from __future__ import annotations``
        in a namespace pydantic cannot see). The forced rebuild keeps these resolved fields.
        """
        super().__pydantic_on_complete__()
        changed = False
        for name, info in cls.__pydantic_fields__.items():
            enabled = _enable(info.annotation)
            if enabled is not info.annotation:
                replaced = copy.copy(info)
                replaced.annotation = enabled
                cls.__pydantic_fields__[name] = replaced
                changed = True
        if changed:
            cls.model_rebuild(force=True, _types_namespace={})

    def model_post_init(self, context: Any, /) -> None:
        """Start unattached: a nested instance is bound to its parent when reached through it."""
        super().model_post_init(context)
        object.__setattr__(self, "_ss_parent", None)

    def __getattribute__(self, name: str) -> Any:
        """Return field values as wrappers bound to this model; anything else as is.

        Lists and dicts are stored as `RedisList` / `RedisDict` on first access, so local
        changes stay on the model's own value; scalars are wrapped on each access.
        """
        value = object.__getattribute__(self, name)
        if name[0] == "_" or name not in type(self).__pydantic_fields__:
            return value
        kind = type(value)
        if kind is list or kind is dict:
            value = RedisList(value) if kind is list else RedisDict(value)
            self.__dict__[name] = value
            kind = type(value)
        if kind is RedisList or kind is RedisDict:
            value._bind(self, name)
            return value
        if isinstance(value, RedisEnabledModel):
            object.__setattr__(value, "_ss_parent", self)
            object.__setattr__(value, "_ss_field", name)
            return value
        return wrap_scalar(value, self, name)

    def __eq__(self, other: object) -> bool:
        """Compare like pydantic does, treating a nested variant as the model it stands for."""
        if not isinstance(other, BaseModel):
            return NotImplemented
        return (
            _origin(type(self)) is _origin(type(other))
            and self.__dict__ == other.__dict__
            and self.__pydantic_private__ == other.__pydantic_private__
            and self.__pydantic_extra__ == other.__pydantic_extra__
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    async def aset(self, **values: Any) -> None:
        """Validate and write several fields in one atomic step (one ``set`` event each).

        Also the way to set a field whose value is None (an unset ``Optional``), which has no
        wrapper to call ``.set()`` on. Any invalid value refuses the whole call before writing.
        """
        planned = []
        root: BaseRedisModel | None = None
        for name, value in values.items():
            codec = field_codec(type(self), name)
            valid = codec.validate(value)
            root, path = self._ss_locate(name)
            op = ops.set_value(path, codec.dump_json(valid), readback=codec.may_hold_floats)
            planned.append((name, codec, valid, op))
        if root is None:
            return
        applied = await root._ss_apply([op for *_, op in planned])
        for (name, codec, valid, _), stored in zip(planned, applied.results, strict=True):
            self._ss_store(
                name, codec.load_json(stored) if codec.may_hold_floats and stored else valid
            )

    # --- what field wrappers call (the `Owner` protocol of streamstore.fields) ---------------

    def _ss_parent_or_none(self) -> RedisEnabledModel | None:
        try:
            parent: RedisEnabledModel | None = object.__getattribute__(self, "_ss_parent")
        except AttributeError:  # made without model_post_init (model_copy)
            return None
        return parent

    def _ss_codec(self, name: str) -> Codec:
        return field_codec(type(self), name)

    def _ss_container_codecs(self, name: str) -> ContainerCodecs:
        return container_codecs(type(self), name)

    def _ss_locate(self, name: str) -> tuple[BaseRedisModel, FieldPath]:
        """Return the top-level model this field belongs to, and the field's path in it."""
        path = [name]
        node = self
        while (parent := node._ss_parent_or_none()) is not None:
            path.append(node._ss_field)
            node = parent
        if not isinstance(node, BaseRedisModel):
            raise UsageError(
                f"this {type(node).__name__} is not inside a BaseRedisModel: reach it through "
                "the model's attribute (e.g. user.profile.skills) to use Redis operations"
            )
        path.reverse()
        return node, tuple(path)

    async def _ss_read(self, name: str) -> str:
        root, path = self._ss_locate(name)
        raw = await get_path(root._ss_client(), root.key, ops.json_path(path))
        if raw is None:
            raise DocumentNotFoundError(f"{root.key} has no {ops.event_path(path)}")
        return raw

    def _ss_store(self, name: str, value: Any) -> None:
        """Put a validated value in place without writing it anywhere."""
        self.__dict__[name] = value
        self.__pydantic_fields_set__.add(name)


def _origin(cls: type[BaseModel]) -> type[BaseModel]:
    return getattr(cls, "__ss_origin__", cls)


_variants: dict[type[BaseModel], type[RedisEnabledModel]] = {}


def nested_variant(model: type[BaseModel]) -> type[RedisEnabledModel]:
    """Return the Redis-enabled variant of a plain pydantic model (a subclass; made once).

    ``isinstance(user.profile, UserProfile)`` holds, it compares equal to a plain
    ``UserProfile`` with the same data, and plain instances validate into it.
    """
    if issubclass(model, RedisEnabledModel):
        return model
    variant = _variants.get(model)
    if variant is None:
        namespace = {
            "__module__": model.__module__,
            "__qualname__": model.__qualname__,
            "__doc__": model.__doc__,
            "__ss_origin__": model,
            "model_config": {**model.model_config, **ENABLED_CONFIG},
        }
        variant = type(model.__name__, (RedisEnabledModel, model), namespace)
        _variants[model] = variant
    return variant


def _enable(annotation: Any) -> Any:  # noqa: PLR0911 (one return per kind of type expression)
    """Return ``annotation`` with plain pydantic models replaced by their variants."""
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel) and not issubclass(annotation, RedisEnabledModel):
            return nested_variant(annotation)
        return annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is None or origin is Literal or not args:
        return annotation
    if origin is Annotated:
        inner = _enable(args[0])
        return annotation if inner is args[0] else Annotated[(inner, *args[1:])]
    enabled = tuple(_enable(arg) for arg in args)
    if all(new is old for new, old in zip(enabled, args, strict=True)):
        return annotation
    if origin in (Union, types.UnionType):
        return Union[enabled]  # noqa: UP007 (rebuilding from a tuple of arms)
    return origin[enabled]


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """A model class's settings, read from its ``class Meta`` (inherited, then overridden)."""

    #: Where the class's client comes from (see `streamstore.connection.ClientSource`).
    redis: ClientSource = None
    #: Seconds to live for document and stream, renewed by every write; None: no expiry.
    ttl: int | None = None
    #: Number of change feed partitions; changing it moves every instance's keys.
    partitions: int = 16
    #: First part of every key (default: the class name).
    key_prefix: str = ""
    #: Approximate length at which each feed partition is trimmed.
    feed_maxlen: int = 10_000
    keys: KeySpace = field(default_factory=lambda: KeySpace("", 16))

    _OPTIONS: ClassVar[tuple[str, ...]] = (
        "redis",
        "ttl",
        "partitions",
        "key_prefix",
        "feed_maxlen",
    )

    @classmethod
    def for_class(cls, model: type[BaseModel]) -> ModelMeta:
        """Collect ``Meta`` options along the MRO of ``model`` and check them."""
        options: dict[str, Any] = {}
        for klass in reversed(model.__mro__):
            meta = klass.__dict__.get("Meta")
            if meta is not None:
                options.update({k: v for k, v in vars(meta).items() if k in cls._OPTIONS})
        if "key_prefix" not in vars(model.__dict__.get("Meta", object)):
            options["key_prefix"] = model.__name__
        prefix, partitions = options["key_prefix"], options.get("partitions", 16)
        if not prefix or any(c in prefix for c in "{}[]*?\\"):
            raise ConfigurationError(f"{model.__name__}: bad Meta.key_prefix {prefix!r}")
        if not isinstance(partitions, int) or partitions < 1:
            raise ConfigurationError(f"{model.__name__}: Meta.partitions must be an int >= 1")
        ttl = options.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise ConfigurationError(f"{model.__name__}: Meta.ttl must be None or seconds >= 1")
        return cls(**options, keys=KeySpace(prefix, partitions))


class BaseRedisModel(RedisEnabledModel):
    """A pydantic model stored as a RedisJSON document, with every change an event in a stream.

    Every write (``save``, ``await model.field.set(...)``, list and dict operations, ``delete``)
    is validated locally, then applied to the document and appended to the instance's stream
    and its partition's change feed in one atomic step. Configure with an inner ``class Meta``:
    ``redis`` (client, URL or settings), ``ttl``, ``partitions``, ``key_prefix``, ``feed_maxlen``.
    """

    __slots__ = ("_ss_keys", "_ss_persisted", "_ss_pk", "_ss_version")
    __ss_meta__: ClassVar[ModelMeta]

    if TYPE_CHECKING:
        _ss_pk: str
        _ss_keys: InstanceKeys
        _ss_version: int | None
        _ss_persisted: bool

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Read the class's ``Meta`` once, when the class is made."""
        super().__pydantic_init_subclass__(**kwargs)
        cls.__ss_meta__ = ModelMeta.for_class(cls)

    # --- identity --------------------------------------------------------------------------

    @property
    def pk(self) -> str:
        """The instance's primary key (a random hex UUID until you set one)."""
        try:
            return self._ss_pk
        except AttributeError:
            object.__setattr__(self, "_ss_pk", uuid.uuid4().hex)
            return self._ss_pk

    @pk.setter
    def pk(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise UsageError("pk must be a non-empty str")
        object.__setattr__(self, "_ss_pk", value)
        object.__setattr__(self, "_ss_keys", type(self).__ss_meta__.keys.for_pk(value))
        object.__setattr__(self, "_ss_persisted", False)
        object.__setattr__(self, "_ss_version", None)

    def _ss_instance_keys(self) -> InstanceKeys:
        try:
            return self._ss_keys
        except AttributeError:
            keys = type(self).__ss_meta__.keys.for_pk(self.pk)
            object.__setattr__(self, "_ss_keys", keys)
            return keys

    @property
    def key(self) -> str:
        """Key of the instance's JSON document, e.g. ``{User:7}:3f2a...``."""
        return self._ss_instance_keys().doc

    @property
    def stream_key(self) -> str:
        """Key of the instance's event stream, e.g. ``{User:7}#events:3f2a...``."""
        return self._ss_instance_keys().stream

    @property
    def version(self) -> int | None:
        """Seq of the last event this object wrote or read, if known."""
        return getattr(self, "_ss_version", None)

    @classmethod
    def key_for(cls, pk: str) -> str:
        """Return the document key of the instance ``pk``."""
        return cls.__ss_meta__.keys.for_pk(pk).doc

    @classmethod
    def _pk_of(cls, key: str) -> str:
        pk = cls.__ss_meta__.keys.pk_from_doc_key(key)
        if pk is None:
            raise UsageError(
                f"{key!r} is not a {cls.__name__} key (pass model.key, or {cls.__name__}.key_for(pk))"
            )
        return pk

    # --- reads -----------------------------------------------------------------------------

    @classmethod
    def _ss_client(cls) -> aioredis.Redis:
        return resolve_client(cls.__ss_meta__.redis)

    @classmethod
    async def get(cls, key: str) -> Self:
        """Load the instance stored at ``key``; `DocumentNotFoundError` (a KeyError) if none."""
        pk = cls._pk_of(key)
        raw = await get_document(cls._ss_client(), key)
        if raw is None:
            raise DocumentNotFoundError(f"{key} does not exist")
        try:
            model = cls.model_validate_json(raw)
        except ValueError as exc:
            raise CorruptDocumentError(f"{key} does not validate as {cls.__name__}: {exc}") from exc
        object.__setattr__(model, "_ss_pk", pk)
        object.__setattr__(model, "_ss_persisted", True)
        return model

    async def history(self) -> list[Event]:
        """Return every event of this instance's stream, oldest first."""
        return await read_events(self._ss_client(), self.stream_key)

    def redis_dump(self) -> dict[str, Any]:
        """Return the document as stored in Redis: JSON types only (bytes as base64)."""
        return self.model_dump(mode="json")

    # --- writes ----------------------------------------------------------------------------

    async def save(self) -> Self:
        """Write the whole model (event ``saved``) and return it."""
        self._ss_only_top_level("save")
        readback = codec_for(type(self)).may_hold_floats
        await self._ss_apply([ops.save(model_json(self), readback=readback)], create=False)
        return self

    async def delete(self, key: str | None = None) -> None:
        """Delete this instance's document (event ``deleted``); its stream stays as history.

        With ``key``, delete that instance instead. Raises `DocumentNotFoundError` (a KeyError)
        when there is nothing to delete; see `try_delete` for the forgiving form.
        """
        if key is not None and key != self.key:
            if not await type(self).try_delete(key):
                raise DocumentNotFoundError(f"{key} does not exist")
            return
        self._ss_only_top_level("delete")
        await self._ss_apply([ops.delete()], create=False)
        object.__setattr__(self, "_ss_persisted", False)

    @classmethod
    async def try_delete(cls, key: str) -> bool:
        """Delete the instance at ``key`` if it exists; return whether it did."""
        pk = cls._pk_of(key)
        meta = cls.__ss_meta__
        plan = build_plan(
            meta.keys.for_pk(pk),
            pk,
            [ops.delete()],
            meta_json=current_meta_json(),
            ttl=meta.ttl,
            feed_maxlen=meta.feed_maxlen,
        )
        try:
            applied = await run_plan(cls._ss_client(), plan)
        except DocumentNotFoundError:
            return False
        _log_events(cls, key, applied)
        return True

    def _ss_only_top_level(self, action: str) -> None:
        if self._ss_parent_or_none() is not None:
            raise UsageError(f"{action}() works on the top-level model, not on a nested one")

    async def _ss_apply(
        self, batch: Sequence[Op], *, create: bool = True, expected_seq: int | None = None
    ) -> Applied:
        """Apply ``batch`` atomically; with ``create``, first save the model if Redis has none."""
        meta = type(self).__ss_meta__
        persisted = getattr(self, "_ss_persisted", False)
        plan = build_plan(
            self._ss_instance_keys(),
            self.pk,
            batch,
            meta_json=current_meta_json(),
            ttl=meta.ttl,
            feed_maxlen=meta.feed_maxlen,
            expected_seq=expected_seq,
            create_json=model_json(self) if create and not persisted else None,
        )
        applied = await run_plan(self._ss_client(), plan)
        object.__setattr__(self, "_ss_persisted", True)
        object.__setattr__(self, "_ss_version", applied.seq)
        _log_events(type(self), plan.keys[0], applied)
        return applied


def _log_events(model: type[BaseModel], key: str, applied: Applied) -> None:
    """Log each committed event (debug level) with model, key, seq and type bound."""
    if not debug_enabled():
        return
    log = get_logger()
    for event_id, seq, kind in applied.events:
        log.debug("event.committed", model=model.__name__, key=key, seq=seq, type=kind, id=event_id)
