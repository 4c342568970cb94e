"""Connections: which Redis a model class talks to, one client per event loop."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from streamstore.errors import ConfigurationError

__all__ = ["DEFAULT_URL", "ClientSource", "RedisSettings", "redacted", "resolve_client"]

#: Where the default connection goes when ``REDIS_URL`` is not set.
DEFAULT_URL = "redis://localhost:6379/0"

Client: TypeAlias = "aioredis.Redis"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Connection settings, built from a URL or the environment.

    Clients made from settings are per event loop: an asyncio client cannot outlive the loop it
    first ran in, so each loop (two ``asyncio.run`` calls, pytest-asyncio's per-test loops)
    gets its own connection pool.
    """

    url: str = DEFAULT_URL
    decode_responses: bool = False

    @classmethod
    def from_env(cls) -> RedisSettings:
        """Return settings for ``REDIS_URL``, else ``redis://localhost:6379/0``."""
        return cls(url=os.environ.get("REDIS_URL", DEFAULT_URL))

    def client(self) -> Client:
        """Make a new client for these settings."""
        try:
            return aioredis.Redis.from_url(self.url, decode_responses=self.decode_responses)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {redacted(self.url)!r}: {exc}") from None


def redacted(url: str) -> str:
    """Return ``url`` with its password (if any) replaced by ``***``, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


#: What ``Meta.redis`` may hold: a client (used as is), settings or a URL (one client per
#: loop), a zero-argument factory, or None (settings from the environment, read at first use).
ClientSource: TypeAlias = "Client | RedisSettings | str | Callable[[], Client] | None"

_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Client]] = (
    weakref.WeakKeyDictionary()
)


#: The last loop each source was used in, and its client there: the hot path's one lookup.
_recent: dict[Any, tuple[weakref.ref[asyncio.AbstractEventLoop], Client]] = {}


def resolve_client(source: ClientSource) -> Client:
    """Return the client for ``source`` in the running event loop."""
    if isinstance(source, aioredis.Redis):
        return source
    loop = asyncio.get_running_loop()
    if source is None:
        settings = RedisSettings.from_env()
        cache_key: Any = settings
    else:
        cache_key = source
    recent = _recent.get(cache_key)
    if recent is not None and recent[0]() is loop:
        return recent[1]
    clients = _per_loop.setdefault(loop, {})
    client = clients.get(cache_key)
    if client is None:
        if source is None:
            client = settings.client()
        elif isinstance(source, str):
            client = RedisSettings(url=source).client()
        elif isinstance(source, RedisSettings):
            client = source.client()
        else:
            client = source()
        clients[cache_key] = client
    _recent[cache_key] = (weakref.ref(loop), client)
    return client
