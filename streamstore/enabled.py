"""Redis-enabled models: field values wrapped on access, bound to their parents; nested variants."""

from __future__ import annotations

import copy
import types
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Literal,
    Union,
    cast,
    get_args,
    get_origin,
)

from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict

from streamstore import operations as ops
from streamstore import paths
from streamstore.errors import (
    ConfigurationError,
    DocumentNotFoundError,
    TopLevelOnlyError,
    UsageError,
)
from streamstore.executor import get_path
from streamstore.fields import RedisDict, RedisList, wrap_scalar
from streamstore.schema import JSON_CONFIG, container_codecs, field_codec

if TYPE_CHECKING:
    from streamstore.events import Event
    from streamstore.paths import FieldPath
    from streamstore.schema import Codec, ContainerCodecs

__all__ = ["ENABLED_CONFIG", "RedisEnabledModel", "nested_variant"]

#: Model settings every Redis-enabled model runs with (a user's own settings are kept otherwise).
ENABLED_CONFIG = ConfigDict(
    validate_assignment=True,  # `user.age = "x"` fails locally, like `await user.age.set("x")`
    validate_default=True,  # defaults of nested models become Redis-enabled too
    from_attributes=True,  # a plain nested model instance validates into its enabled variant
    # Documents and event paths use field names, never aliases (see docs/models.md): reading one
    # back must accept names; aliases still work for your own input, `User(Name="x")`.
    validate_by_name=True,
    **JSON_CONFIG,
)


def _aliases(info: Any) -> set[str]:
    """Return the top-level keys a field's aliases read from (alias, validation_alias)."""
    found: set[str] = set()
    for alias in (info.alias, info.validation_alias):
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                found.add(choice.path[0])
            elif isinstance(choice, str):
                found.add(choice)
    return found


def _check_aliases(cls: type[BaseModel]) -> None:
    """Refuse aliases that would make a stored document (keyed by field names) read wrongly.

    Documents are validated by field name; an alias equal to another field's name would make
    that key read into the wrong field, and a model that turns off ``validate_by_name`` could
    not read its documents at all.
    """
    fields = cls.__pydantic_fields__
    aliased = False
    for name, info in fields.items():
        for alias in _aliases(info) - {name}:
            aliased = True
            if alias in fields:
                raise ConfigurationError(
                    f"{cls.__name__}: field {name!r} has the alias {alias!r}, which is another "
                    "field's name; documents store fields by name, so it would read the wrong "
                    "value back"
                )
    if aliased and cls.model_config.get("validate_by_name") is False:
        raise ConfigurationError(
            f"{cls.__name__}: documents store fields by name, so a model with aliases needs "
            "validate_by_name (leave it at streamstore's default, True)"
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
    #: Whether instances are stored under their own key (`BaseRedisModel`) or inside a parent.
    __ss_top_level__: ClassVar[bool] = False

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
        _check_aliases(cls)
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
        root: Any = None
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

    async def history(self, **filters: Any) -> list[Event]:
        """Return the events that touched this nested model: on it, inside it, or on a parent.

        Takes the filters of the top-level model's ``history()`` (a `Timeline` method).
        """
        parent = self._ss_parent_or_none()
        if parent is None:
            raise UsageError(
                f"this {type(self).__name__} is not inside a BaseRedisModel: reach it through "
                "the model's attribute (e.g. user.profile) to read its history"
            )
        root, path = parent._ss_locate(self._ss_field)
        return cast("list[Event]", await root.history(path=path, **filters))

    async def duplicate(self) -> Any:
        """Copy a top-level model to a new pk (see `BaseRedisModel.duplicate`)."""
        raise TopLevelOnlyError("Can only duplicate from top level model")

    async def duplicate_many(self, count: int) -> list[Any]:  # noqa: ARG002 (the API's shape)
        """Copy a top-level model to ``count`` new pks (see `BaseRedisModel.duplicate_many`)."""
        raise TopLevelOnlyError("Can only duplicate from top level model")

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

    def _ss_locate(self, name: str) -> tuple[Any, FieldPath]:
        """Return the top-level model this field belongs to, and the field's path in it."""
        path = [name]
        node = self
        while (parent := node._ss_parent_or_none()) is not None:
            path.append(node._ss_field)
            node = parent
        if not node.__ss_top_level__:
            raise UsageError(
                f"this {type(node).__name__} is not inside a BaseRedisModel: reach it through "
                "the model's attribute (e.g. user.profile.skills) to use Redis operations"
            )
        path.reverse()
        return node, tuple(path)

    async def _ss_read(self, name: str) -> str:
        root, path = self._ss_locate(name)
        raw = await get_path(root._ss_client(), root.key, paths.json_path(path))
        if raw is None:
            raise DocumentNotFoundError(f"{root.key} has no {paths.event_path(path)}")
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
