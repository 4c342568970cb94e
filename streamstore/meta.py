"""Model options: a class's ``class Meta``, collected along its MRO and checked once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from streamstore.connection import ClientSource
from streamstore.durability import Durability
from streamstore.errors import ConfigurationError
from streamstore.keys import KeySpace
from streamstore.projections.upcasting import Upcaster, UpcasterChain

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pydantic import BaseModel

__all__ = ["ModelMeta"]


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
        every = options.get("snapshot_every", 0)
        if not isinstance(every, int) or every < 0:
            raise ConfigurationError(f"{model.__name__}: Meta.snapshot_every must be an int >= 0")
        seed_key = model.__private_attributes__.get("_primary_key_field")
        if seed_key is not None and "primary_key" not in options:
            options["primary_key"] = seed_key.get_default()
        key_field = options.get("primary_key")
        if key_field is not None and key_field not in model.__pydantic_fields__:
            raise ConfigurationError(f"{model.__name__}: primary key {key_field!r} is not a field")
        durability = options.get("durability")
        if durability is not None and not isinstance(durability, Durability):
            raise ConfigurationError(f"{model.__name__}: Meta.durability must be a Durability")
        chain = UpcasterChain(
            options.get("schema_version", 1), options.get("upcasters", {}), model.__name__
        )
        upcast = None if chain.is_identity else chain
        return cls(**options, keys=KeySpace(prefix, partitions), upcast=upcast)
