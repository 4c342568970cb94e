"""Model options: a class's ``class Meta``, collected along its MRO and checked once."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from streamstore.arguments import MAX_EXACT, checked_int, checked_ttl
from streamstore.connection import ClientSource, RedisSettings
from streamstore.durability import Durability
from streamstore.errors import ArgumentTypeError, ArgumentValueError, ConfigurationError, UsageError
from streamstore.keys import KeySpace, check_text
from streamstore.projections.upcasting import Upcaster, UpcasterChain

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

__all__ = [
    "MAX_PARTITIONS",
    "ModelClass",
    "ModelMeta",
    "StoredModel",
    "claim_prefix",
    "release_prefix",
]

#: Most change feed partitions: Redis Cluster has 16384 slots, more partitions cannot spread wider.
MAX_PARTITIONS = 16384


class StoredModel(Protocol):
    """A stored model as the read side knows it: its class's fields, options and document keys.

    Every `streamstore.BaseRedisModel` subclass's instances are ones. The read side
    (`streamstore.projections`) types model classes as `ModelClass` and never imports the model
    API.
    """

    __ss_meta__: ClassVar[ModelMeta]
    __pydantic_fields__: ClassVar[dict[str, FieldInfo]]

    @classmethod
    def key_for(cls, pk: str) -> str:
        """Return the document key of the instance ``pk``."""
        ...


#: A model class as the read side takes it (see `StoredModel`).
ModelClass: TypeAlias = type[StoredModel]


def _checked_redis(source: Any) -> ClientSource:
    if source is None or isinstance(source, str | RedisSettings | Redis | RedisCluster):
        return source
    if callable(source):
        return source  # type: ignore[no-any-return]  # a factory: called on first use
    raise ArgumentTypeError(
        "Meta.redis must be a URL, RedisSettings, a redis.asyncio client or a function "
        f"returning one, not {type(source).__name__}"
    )


def _checked_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str):
        raise ArgumentTypeError(f"Meta.key_prefix must be a str, not {type(prefix).__name__}")
    if not prefix or any(c in prefix for c in "{}[]*?\\"):
        raise ArgumentValueError(
            f"bad Meta.key_prefix {prefix!r}: non-empty, without any of {{}}[]*?\\"
        )
    return check_text(prefix, "Meta.key_prefix")


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
    #: Write a ``snapshot`` event every this many events (0: never), so replay starts there.
    snapshot_every: int = 0
    #: Version of the model's schema, recorded in every event (``mv``) for upcasters.
    schema_version: int = 1
    #: Per old schema version, the upcaster(s) turning its events into the next version's.
    upcasters: Mapping[int, Upcaster | Sequence[Upcaster]] = field(default_factory=dict)
    #: The field whose value is the pk (``Meta.primary_key``, or the seeds' class attribute
    #: ``_primary_key_field = "title"``); None: a random pk unless one is set.
    primary_key: str | None = None
    #: Default TTL of ``insert``/``update`` (a `Store`'s ``life_span_in_seconds``).
    life_span: int | None = None
    #: What every write waits for after Redis applied it (replicas, aof); None: nothing.
    durability: Durability | None = None
    keys: KeySpace = field(default_factory=lambda: KeySpace("", 16))
    #: `upcasters` checked and chained; None when there are none.
    upcast: UpcasterChain | None = None

    _OPTIONS: ClassVar[tuple[str, ...]] = (
        "redis",
        "ttl",
        "partitions",
        "key_prefix",
        "feed_maxlen",
        "snapshot_every",
        "schema_version",
        "upcasters",
        "primary_key",
        "durability",
    )

    @classmethod
    def for_class(cls, model: type[BaseModel]) -> ModelMeta:
        """Collect ``Meta`` options along the MRO of ``model`` and check them.

        Every problem is a `ConfigurationError` naming the class and the option, raised when
        the class is made: a bad option never gets as far as a write.
        """
        options: dict[str, Any] = {}
        for klass in reversed(model.__mro__):
            meta = klass.__dict__.get("Meta")
            if meta is not None:
                options.update(_own_options(model, meta))
        own_meta = vars(model.__dict__.get("Meta", object))
        explicit = "key_prefix" in own_meta
        if not explicit:
            options["key_prefix"] = model.__name__
        seed_key = model.__private_attributes__.get("_primary_key_field")
        if seed_key is not None and "primary_key" not in options:
            options["primary_key"] = seed_key.get_default()
        try:
            _check_options(model, options)
        except UsageError as exc:
            raise ConfigurationError(f"{model.__name__}: {exc}") from None
        chain = UpcasterChain(
            options.get("schema_version", 1), options.get("upcasters", {}), model.__name__
        )
        upcast = None if chain.is_identity else chain
        keys = KeySpace(options["key_prefix"], options.get("partitions", 16))
        if not model.__dict__.get("__ss_abstract__") and not _is_library_base(model):
            claim_prefix(options["key_prefix"], model, explicit=explicit)
        return cls(**options, keys=keys, upcast=upcast)


def _own_options(model: type[BaseModel], meta: type) -> dict[str, Any]:
    """Return the options one ``class Meta`` sets; an unknown name is a `ConfigurationError`."""
    found = {}
    for name, value in vars(meta).items():
        if name.startswith("_"):
            continue  # __module__, __doc__, ... of the class statement itself
        if name not in ModelMeta._OPTIONS:
            close = _closest(name)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ConfigurationError(
                f"{model.__name__}: unknown option Meta.{name}{hint}; the options are "
                + ", ".join(ModelMeta._OPTIONS)
            )
        found[name] = value
    return found


def _closest(name: str) -> str | None:
    """Return the option a misspelt ``name`` most likely meant (``ttl_seconds``: ``ttl``)."""
    for option in ModelMeta._OPTIONS:
        if option in name or name in option:
            return option
    close = difflib.get_close_matches(name, ModelMeta._OPTIONS, n=1)
    return close[0] if close else None


def _check_options(model: type[BaseModel], options: dict[str, Any]) -> None:
    """Check every option's type and range in place (ints normalised); `UsageError` if bad."""
    options["redis"] = _checked_redis(options.get("redis"))
    options["key_prefix"] = _checked_prefix(options["key_prefix"])
    if options.get("ttl") is not None:
        options["ttl"] = checked_ttl(options["ttl"], "Meta.ttl")
    ints = {
        "partitions": (1, MAX_PARTITIONS),
        "feed_maxlen": (1, MAX_EXACT),
        "snapshot_every": (0, MAX_EXACT),
        "schema_version": (1, MAX_EXACT),
    }
    for name, (low, high) in ints.items():
        if name in options:
            options[name] = checked_int(options[name], f"Meta.{name}", low=low, high=high)
    upcasters = options.get("upcasters", {})
    if not isinstance(upcasters, Mapping):
        raise ArgumentTypeError(
            "Meta.upcasters must be a dict {old schema version: upcaster(s)}, "
            f"not {type(upcasters).__name__}"
        )
    key_field = options.get("primary_key")
    if key_field is not None and not isinstance(key_field, str):
        raise ArgumentTypeError(f"Meta.primary_key must be a field name, not {key_field!r}")
    if key_field is not None and key_field not in model.__pydantic_fields__:
        raise ArgumentValueError(f"primary key {key_field!r} is not a field")
    durability = options.get("durability")
    if durability is not None and not isinstance(durability, Durability):
        raise ArgumentTypeError("Meta.durability must be a Durability")


# --- one key prefix, one model ---------------------------------------------------------------

#: Per key prefix, the modules whose classes use it: module -> (qualname, whether the prefix
#: was set explicitly in ``Meta.key_prefix`` rather than taken from the class name).
_owners: dict[str, dict[str, tuple[str, bool]]] = {}


def _is_library_base(model: type[BaseModel]) -> bool:
    """Tell whether ``model`` is one of streamstore's own bases (TableModel, AutoModel, ...)."""
    return model.__module__.split(".", 1)[0] == "streamstore"


def claim_prefix(prefix: str, model: type[BaseModel], *, explicit: bool) -> None:
    """Record that ``model`` keeps its instances under ``prefix``; refuse another module's class.

    Classes of two modules share keys only if both name that prefix in ``Meta.key_prefix`` (a
    deliberate share, such as a service's read-only copy of a model). Within one module a
    class may be made again (a reload, a class made by a function called twice, a test's
    local class): the module is the owner. Anything else is a `ConfigurationError` naming both.
    """
    owners = _owners.setdefault(prefix, {})
    for module, (qualname, other_explicit) in owners.items():
        if module != model.__module__ and not (explicit and other_explicit):
            raise ConfigurationError(
                f"{model.__module__}.{model.__qualname__} would share the keys {{{prefix}:...}} "
                f"with {module}.{qualname}: give one of them its own Meta.key_prefix (or set "
                "the same Meta.key_prefix on both, to share the instances on purpose)"
            )
    known = owners.get(model.__module__)
    # One module may hold an explicit and a name-derived class of one prefix: keep "explicit"
    # only if every class of the module set it, so another module cannot share by accident.
    owners[model.__module__] = (model.__qualname__, explicit and (known is None or known[1]))


def release_prefix(prefix: str, model: type[BaseModel]) -> None:
    """Forget that ``model``'s module uses ``prefix`` (its class moved: `Store.register_model`)."""
    owners = _owners.get(prefix, {})
    owners.pop(model.__module__, None)
    if not owners:
        _owners.pop(prefix, None)
