"""Shared fixtures: a private Redis with RedisJSON (or a cluster of them) for the whole session."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import redis as redis_sync
from clients import async_client, cluster_requested, sync_client

from streamstore.testing import RedisClusterServer, RedisServer, redis_url_for_tests

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from streamstore.connection import Client


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the session's Redis: `$REDIS_URL` if set, else a private server started here.

    With ``STREAMSTORE_TEST_CLUSTER=1``, a private 3-master cluster (``redis+cluster://``).
    """
    if cluster_requested():
        with RedisClusterServer(masters=3) as cluster:
            yield cluster.url
        return
    with redis_url_for_tests() as url:
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against a cluster, leave out the tests marked ``single_node`` (they say why)."""
    if not cluster_requested():
        return
    kept = [item for item in items if item.get_closest_marker("single_node") is None]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


@pytest.fixture(scope="session")
def plain_redis_url() -> Iterator[str]:
    """URL of a private Redis *without* the RedisJSON module."""
    with RedisServer(redisjson=False) as server:
        yield server.url


@pytest.fixture(scope="session", autouse=True)
def _redis_url_env(redis_url: str) -> Iterator[None]:
    """Point `$REDIS_URL` at the session's Redis so default connections hit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", redis_url)
        yield


@contextlib.asynccontextmanager
async def flushed_client(url: str, *, decode: bool) -> AsyncIterator[Client]:
    """Open a client on ``url`` and flush its database first (so a failure leaves data to see)."""
    client = async_client(url, decode=decode)
    try:
        await client.flushdb()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def db(redis_url: str) -> Iterator[redis_sync.Redis | redis_sync.RedisCluster]:
    """A sync client (str replies) on a freshly flushed database, for tests that are not async."""
    client = sync_client(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Client]:
    """A bytes-returning async client on a freshly flushed database."""
    async with flushed_client(redis_url, decode=False) as client:
        yield client


@pytest_asyncio.fixture
async def redis_decoded(redis_url: str) -> AsyncIterator[Client]:
    """A str-returning async client (`decode_responses=True`) on a freshly flushed database."""
    async with flushed_client(redis_url, decode=True) as client:
        yield client
