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
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url

from streamstore.errors import ConfigurationError

__all__ = [
    "DEFAULT_URL",
    "Client",
    "ClientSource",
    "RedisSettings",
    "Target",
    "redacted",
    "resolve_client",
]

#: Where the default connection goes when ``REDIS_URL`` is not set.
DEFAULT_URL = "redis://localhost:6379/0"

#: A client of one Redis server or of a Redis Cluster: streamstore works the same on both.
Client: TypeAlias = "aioredis.Redis | RedisCluster"

#: A client, or a pipeline of one that queues the commands called on it.
Target: TypeAlias = "Client | Pipeline | ClusterPipeline"

#: URL schemes that name a Redis Cluster, and the plain scheme each stands for.
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Connection settings, built from a URL or the environment.

    Clients made from settings are per event loop: an asyncio client cannot outlive the loop it
    first ran in, so each loop (two ``asyncio.run`` calls, pytest-asyncio's per-test loops)
    gets its own connection pool.

    A pool holds up to 100 connections (per cluster node), unless the URL says
    ``?max_connections=N``. Beyond that, streamstore's calls wait for one of theirs to finish;
    other commands sent on the client fail with redis-py's `MaxConnectionsError`.
    """

    url: str = DEFAULT_URL
    decode_responses: bool = False
    #: Treat the URL's host as a seed node of a Redis Cluster. A ``redis+cluster://`` (or
    #: ``rediss+cluster://``) URL, which may list several seed nodes, implies it.
    cluster: bool = False

    @classmethod
    def from_env(cls) -> RedisSettings:
        """Return settings for ``REDIS_URL``, else ``redis://localhost:6379/0``."""
        return cls(url=os.environ.get("REDIS_URL", DEFAULT_URL))

    def client(self) -> Client:
        """Make a new client for these settings: a `RedisCluster` for a cluster."""
        try:
            if self.cluster or urlsplit(self.url).scheme in _CLUSTER_SCHEMES:
                return _cluster_client(self.url, decode_responses=self.decode_responses)
            return aioredis.Redis.from_url(self.url, decode_responses=self.decode_responses)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {redacted(self.url)!r}: {exc}") from None


def _cluster_client(url: str, *, decode_responses: bool) -> RedisCluster:
    """Make a cluster client from ``[redis|rediss][+cluster]://[user:pass@]host:port,.../0?opts``.

    Every listed node is a seed: the client asks the first that answers for the cluster's
    layout. Query options are those of redis-py's URLs (``socket_timeout`` and so on).
    """
    parts = urlsplit(url)
    scheme = _CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    credentials, _, hosts = parts.netloc.rpartition("@")
    seeds = []
    for address in hosts.split(","):
        seed = urlsplit(f"//{address}")
        if not seed.hostname:
            raise ValueError(f"no host in {address!r}")
        seeds.append(ClusterNode(seed.hostname, seed.port or 6379))
    login = f"{credentials}@" if credentials else ""
    # redis-py parses everything but the hosts: credentials, database, query options.
    options: dict[str, Any] = dict(
        parse_url(urlunsplit((scheme, login + "seed", parts.path, parts.query, "")))
    )
    for name in ("host", "port"):
        options.pop(name, None)
    if options.pop("db", 0):
        raise ValueError("a Redis Cluster has only database 0")
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return RedisCluster(startup_nodes=seeds, decode_responses=decode_responses, **options)


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
    if isinstance(source, aioredis.Redis | RedisCluster):
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
