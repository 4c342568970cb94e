"""Stores: the seed libraries' way to say which Redis a group of models uses, and their namespace.

``Store(name="shop", redis_config=RedisConfig(...), life_span_in_seconds=3600)`` and
``store.register_model(Book)``, as in pydantic-redis and pydantic-aioredis. Registering binds the
model class to the store's Redis, puts its keys under the store's name (two stores on one
database never see each other's data), and makes the store's life span the default TTL of
``insert`` and ``update``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from streamstore.arguments import checked_ttl
from streamstore.connection import RedisSettings
from streamstore.errors import ConfigurationError, UsageError
from streamstore.keys import KeySpace
from streamstore.meta import claim_prefix, release_prefix

if TYPE_CHECKING:
    from streamstore.model import BaseRedisModel

__all__ = ["RedisConfig", "Store"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where a store's Redis is, field by field (the seeds' ``RedisConfig``)."""

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    password: str | None = None
    ssl: bool = False
    encoding: str = "utf-8"
    #: ``host:port`` is a seed node of a Redis Cluster (an addition to the seeds' fields).
    cluster: bool = False

    @property
    def redis_url(self) -> str:
        """Return the settings as a Redis URL (``rediss://`` with ``ssl``)."""
        scheme = "rediss" if self.ssl else "redis"
        auth = "" if self.password is None else f":{quote(self.password, safe='')}@"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def settings(self) -> RedisSettings:
        """Return the `RedisSettings` the store's models connect with."""
        return RedisSettings(url=self.redis_url, cluster=self.cluster)


class Store:
    """A named group of model classes on one Redis, with a default life span for records."""

    def __init__(
        self,
        name: str,
        redis_config: RedisConfig | None = None,
        life_span_in_seconds: int | None = None,
    ) -> None:
        """Make a store named ``name`` (it prefixes every key of its models).

        ``life_span_in_seconds`` (None: records never expire) is the TTL ``insert`` and
        ``update`` give records when not told otherwise.
        """
        if not _NAME.match(name):
            raise ConfigurationError(f"store name {name!r}: use letters, digits and _.- only")
        if life_span_in_seconds is not None:
            try:
                life_span_in_seconds = checked_ttl(life_span_in_seconds, "life_span_in_seconds")
            except UsageError as exc:
                raise ConfigurationError(f"store {name!r}: {exc}") from None
        self.name = name
        self.redis_config = redis_config or RedisConfig()
        self.life_span_in_seconds = life_span_in_seconds
        self.models: dict[str, type[BaseRedisModel]] = {}

    def register_model(self, model: type[BaseRedisModel]) -> None:
        """Bind ``model`` to this store: its Redis, its keys under the store's name, its life span.

        Its keys become ``<store name>:<class name>`` (or ``<store name>:<Meta.key_prefix>``
        when the class sets one); another module's class already there is a `ConfigurationError`.

        Register before the first read or write: instances written before live under the old
        keys. A class belongs to one store at a time.
        """
        meta = model.__ss_meta__
        own = vars(model.__dict__.get("Meta", object)).get("key_prefix")
        prefix = f"{self.name}:{own or model.__name__}"
        if meta.key_prefix != prefix:
            claim_prefix(prefix, model, explicit=own is not None)
            release_prefix(meta.key_prefix, model)
        model.__ss_meta__ = dataclasses.replace(
            meta,
            redis=self.redis_config.settings(),
            key_prefix=prefix,
            keys=KeySpace(prefix, meta.partitions),
            life_span=self.life_span_in_seconds,
        )
        self.models[model.__name__] = model
